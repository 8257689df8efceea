/**
 * The checker: reads the final state of every job the ledger says a broker
 * acknowledged, and the effects its handlers recorded, and sorts each job
 * into exactly one bucket:
 *
 *   ok          COMPLETED, its effect applied once
 *   duplicated  COMPLETED, its effect applied more than once (at-least-once
 *               allows it; counted, not a failure)
 *   lost        no row at all: acknowledged, then gone
 *   stuck       still waiting or running (SCHEDULED, AVAILABLE, RUNNING,
 *               RETRYABLE) after the drain deadline, with everything healthy
 *   unexpected  anything else: DEAD or CANCELLED (the handler never fails),
 *               COMPLETED without any effect
 *
 * so acknowledged = ok + duplicated + lost + stuck + unexpected. Jobs in the
 * queue the ledger does not know (neither acknowledged nor indeterminate)
 * and effects of unknown jobs are also unexpected; they are listed apart.
 */
import type pg from "pg";
import type { Ledger } from "./producers.js";

export interface Tally {
  acknowledged: number;
  ok: number;
  duplicated: number;
  lost: number;
  stuck: number;
  unexpected: number;
  /** Enqueues whose outcome is unknown (every try failed). */
  indeterminate: number;
  /** Of those, how many exist (each must have reached a final state). */
  indeterminateFound: number;
  /** Most executions of one job. */
  maxEffects: number;
  /** Up to a few examples per problem bucket. */
  details: string[];
}

interface Row {
  id: string;
  state: string | null;
  attempt: number | null;
  effects: number;
  last_error: string | null;
  lease_expires_at: Date | null;
}

const SAMPLES = 5;

export async function check(pool: pg.Pool, queue: string, ledger: Ledger, fixtures: Set<string>): Promise<Tally> {
  const ids = [...ledger.acked.values()].map((e) => e.id);
  const { rows } = await pool.query<Row>(
    `SELECT a.id::text, j.state::text, j.attempt, coalesce(e.n, 0)::int AS effects,
            j.errors -> -1 ->> 'message' AS last_error, j.lease_expires_at
     FROM unnest($1::bigint[]) a(id)
     LEFT JOIN jobwire.jobs j ON j.id = a.id
     LEFT JOIN (SELECT job_id, count(*) AS n FROM chaos.effects GROUP BY job_id) e ON e.job_id = a.id`,
    [ids],
  );
  const t: Tally = {
    acknowledged: ids.length,
    ok: 0,
    duplicated: 0,
    lost: 0,
    stuck: 0,
    unexpected: 0,
    indeterminate: ledger.indeterminate.size,
    indeterminateFound: 0,
    maxEffects: 0,
    details: [],
  };
  const samples = new Map<string, string[]>();
  const note = (bucket: string, text: string) => {
    const list = samples.get(bucket) ?? [];
    if (list.length < SAMPLES) list.push(text);
    samples.set(bucket, list);
  };
  const describe = (r: Row) =>
    `job ${r.id}: ${r.state ?? "no row"}, attempt ${r.attempt ?? "-"}, ${r.effects} effect(s)` +
    (r.last_error ? `, last error "${r.last_error.slice(0, 80)}"` : "") +
    (r.lease_expires_at ? `, lease ${r.lease_expires_at.getTime() < Date.now() ? "expired" : "ends"} ${r.lease_expires_at.toISOString()}` : "");
  for (const r of rows) {
    t.maxEffects = Math.max(t.maxEffects, r.effects);
    if (r.state === null) {
      t.lost++;
      note("lost", describe(r));
    } else if (r.state === "completed") {
      if (r.effects === 1) t.ok++;
      else if (r.effects > 1) t.duplicated++;
      else {
        t.unexpected++;
        note("unexpected", `${describe(r)} (completed, but its handler never ran to its effect)`);
      }
    } else if (r.state === "dead" || r.state === "cancelled") {
      t.unexpected++;
      note("unexpected", describe(r));
    } else {
      t.stuck++;
      note("stuck", describe(r));
    }
  }

  // Jobs in the queue that no acknowledged enqueue names.
  const known = new Set(ids);
  const { rows: others } = await pool.query<{ id: string; state: string; key: string | null }>(
    "SELECT id::text, state::text, idempotency_key AS key FROM jobwire.jobs WHERE queue = $1 AND NOT (id = ANY($2::bigint[]))",
    [queue, ids],
  );
  for (const o of others) {
    if (fixtures.has(o.id)) continue;
    if (o.key !== null && ledger.indeterminate.has(o.key)) {
      t.indeterminateFound++;
      if (!["completed", "dead", "cancelled"].includes(o.state)) {
        t.stuck++;
        note("stuck", `job ${o.id} (indeterminate enqueue ${o.key}): ${o.state}`);
      }
    } else {
      t.unexpected++;
      note("unexpected", `job ${o.id}: in the queue but never acknowledged (key ${o.key ?? "none"}, ${o.state})`);
    }
  }
  // Effects of jobs that are not in the queue at all.
  const { rows: stray } = await pool.query<{ job_id: string }>(
    "SELECT DISTINCT e.job_id::text FROM chaos.effects e LEFT JOIN jobwire.jobs j ON j.id = e.job_id WHERE j.id IS NULL OR j.queue <> $1",
    [queue],
  );
  for (const s of stray) {
    if (known.has(s.job_id) || fixtures.has(s.job_id)) continue;
    t.unexpected++;
    note("unexpected", `effect recorded for job ${s.job_id}, which is not a job of this run`);
  }
  for (const [bucket, list] of samples) for (const s of list) t.details.push(`${bucket}: ${s}`);
  return t;
}
