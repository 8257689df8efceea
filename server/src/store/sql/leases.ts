import type { LeaseRef } from "../../model.js";
import { query, type Queryable } from "../db.js";
import { canonicalId } from "./rows.js";

/**
 * Ack, heartbeat and release: the statements over many leased rows, as SQL
 * functions (sql/functions/ack_leases.sql, heartbeat_leases.sql,
 * release_leases.sql). They lock rows in id order, so that two of them over
 * the same rows cannot deadlock, and find rows by primary key with no join,
 * at O(tokens).
 */

/** Returns the ids it could not ack (id), and how many it acked per queue (queue, acked). */
const ACK = "SELECT lost_id AS id, queue, acked FROM jobwire.ack_leases($1::bigint[], $2::jsonb, $3::bigint)";
const HEARTBEAT = "SELECT id, lease_expires_at, cancel_requested FROM jobwire.heartbeat_leases($1::bigint[], $2::jsonb, $3::int)";
const RELEASE = "SELECT id, queue FROM jobwire.release_leases($1::bigint[], $2::jsonb)";

/** A statement's worth of leases: ids distinct; at[k] is the input index of ids[k]. */
interface LeaseRound {
  ids: string[];
  tokens: string[];
  at: number[];
}

/**
 * Splits leases into rounds in which every id appears once (a round's
 * tokens travel as one object keyed by id).
 * Almost every call is one round. No sorting is needed for lock order: the
 * functions' index scans visit the ids in ascending order.
 */
function leasedRounds(leases: LeaseRef[]): LeaseRound[] {
  const rounds: LeaseRound[] = [];
  const seen = new Map<string, number>();
  for (let i = 0; i < leases.length; i++) {
    const l = leases[i]!;
    const id = canonicalId(l.id);
    const k = seen.get(id) ?? 0;
    seen.set(id, k + 1);
    let r = rounds[k];
    if (r === undefined) {
      r = { ids: [], tokens: [], at: [] };
      rounds[k] = r;
    }
    r.ids.push(id);
    r.tokens.push(l.token);
    r.at.push(i);
  }
  return rounds;
}

/**
 * A round's ids as a Postgres array literal, and its (id, token) pairs as a
 * JSON object {"<id>": "<uuid>"}, each written straight into one string.
 * The ids are decimal digits and the tokens lower-case uuids (broker/token.ts
 * refuses anything else), so neither needs quoting or escaping; node-postgres
 * would escape each array element with two regular expressions.
 */
function roundParams(round: LeaseRound): [string, string] {
  let ids = "{";
  let pairs = "{";
  for (let k = 0; k < round.ids.length; k++) {
    const sep = k === 0 ? "" : ",";
    ids += sep + round.ids[k]!;
    pairs += `${sep}"${round.ids[k]!}":"${round.tokens[k]!}"`;
  }
  return [`${ids}}`, `${pairs}}`];
}

/**
 * Runs a leased-row function once per round and calls each(row, i) for
 * every row it returns, i being the row's index in leases.
 */
async function leased<R extends object>(
  db: Queryable,
  sql: string,
  name: string,
  leases: LeaseRef[],
  extra: unknown[],
  each: (row: R, i: number) => void,
): Promise<void> {
  for (const round of leasedRounds(leases)) {
    const params = [...roundParams(round), ...extra];
    const { rows } = await query<R & { id: string }>(db, sql, params, name);
    if (rows.length === 0) continue;
    const index = new Map<string, number>();
    for (let k = 0; k < round.ids.length; k++) index.set(round.ids[k]!, round.at[k]!);
    for (const r of rows) each(r, r.id === null ? -1 : index.get(r.id)!);
  }
}

export interface AckResult {
  /** acked[i] tells leases[i]. */
  acked: boolean[];
  /** Jobs completed, per queue. */
  perQueue: Map<string, number>;
}

/** Completes the leases that are still current. */
export async function ack(db: Queryable, leases: LeaseRef[], defaultRetentionMs: number): Promise<AckResult> {
  const acked = new Array<boolean>(leases.length).fill(true);
  const perQueue = new Map<string, number>();
  // The statement names the leases it could not ack, and counts the others per queue.
  await leased<{ queue: string | null; acked: number | null }>(db, ACK, "jobwire_ack", leases, [defaultRetentionMs], (r, i) => {
    if (r.queue !== null) perQueue.set(r.queue, (perQueue.get(r.queue) ?? 0) + r.acked!);
    else acked[i] = false;
  });
  return { acked, perQueue };
}

/** Extends the leases that are still current; extended[i] tells leases[i] (null: lost). */
export async function heartbeat(
  db: Queryable,
  leases: LeaseRef[],
  extendMs: number | null,
): Promise<({ expiresAt: Date; cancelRequested: boolean } | null)[]> {
  const extended = new Array<{ expiresAt: Date; cancelRequested: boolean } | null>(leases.length).fill(null);
  type Row = { lease_expires_at: Date; cancel_requested: boolean };
  await leased<Row>(db, HEARTBEAT, "jobwire_heartbeat", leases, [extendMs], (r, i) => {
    extended[i] = { expiresAt: r.lease_expires_at, cancelRequested: r.cancel_requested };
  });
  return extended;
}

/** Gives back undelivered leases; returns the queues that got jobs back. */
export async function release(db: Queryable, leases: LeaseRef[]): Promise<string[]> {
  const queues = new Set<string>();
  await leased<{ queue: string }>(db, RELEASE, "jobwire_release", leases, [], (r) => queues.add(r.queue));
  return [...queues];
}
