import { randomUUID } from "node:crypto";
import type { JobState } from "../model.js";
import type { Queryable } from "../store/db.js";

/**
 * The job factory for tests: inserts one job in any state, as the broker's
 * own statements would have left it, without going through the broker.
 * Every spec that needs a job in a given state (a running job with an
 * expired lease, a dead one with a history) makes it here, so the table's
 * shape is written down once for tests.
 */
export interface JobFixture {
  queue: string;
  state?: JobState;
  type?: string;
  payload?: Uint8Array;
  priority?: number;
  attempt?: number;
  maxAttempts?: number;
  /** jobs.retry as stored: {"initial_ms", "max_ms", "multiplier", "jitter"}, or anything, to test bad rows. */
  retry?: unknown;
  headers?: Record<string, string>;
  /** For running jobs: when the lease expires, from now (negative: already expired). Default 30 s. */
  leaseExpiresInMs?: number;
  workerId?: string;
  idempotencyKey?: string;
  /** From now; default 24 h when a key is set. */
  idempotencyTtlMs?: number;
  /** run_at, from now. Default 0. */
  runInMs?: number;
  errors?: { attempt: number; message: string; at?: Date; workerId?: string }[];
  errorsDropped?: number;
  cancelRequested?: boolean;
  /** For completed jobs: prune_at from now. */
  pruneInMs?: number;
}

export interface MadeJob {
  id: string;
  /** The lease token's uuid for running jobs (the broker's token is `${id}.${token}`), else null. */
  token: string | null;
}

const FINAL: JobState[] = ["completed", "dead", "cancelled"];

export async function makeJob(db: Queryable, f: JobFixture): Promise<MadeJob> {
  const state = f.state ?? "available";
  const running = state === "running";
  const token = running ? randomUUID() : null;
  const errors = (f.errors ?? []).map((e) => ({
    attempt: e.attempt,
    message: e.message,
    at: (e.at ?? new Date()).toISOString(),
    worker_id: e.workerId ?? null,
  }));
  const { rows } = await db.query<{ id: string }>(
    `INSERT INTO jobwire.jobs (queue, type, payload, state, priority, attempt, max_attempts, retry, headers, run_at,
                               lease_token, lease_expires_at, leased_for_ms, worker_id, idempotency_key,
                               idempotency_expires_at, errors, errors_dropped, cancel_requested, finished_at, prune_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + $10 * interval '1 millisecond',
             $11, CASE WHEN $11::uuid IS NOT NULL THEN now() + $12 * interval '1 millisecond' END,
             CASE WHEN $11::uuid IS NOT NULL THEN 30000 END, $13, $14,
             CASE WHEN $14::text IS NOT NULL THEN now() + $15 * interval '1 millisecond' END,
             $16, $17, $18, CASE WHEN $19 THEN now() END,
             CASE WHEN $20::bigint IS NOT NULL THEN now() + $20 * interval '1 millisecond' END)
     RETURNING id`,
    [
      f.queue,
      f.type ?? "t",
      Buffer.from(f.payload ?? new Uint8Array(0)),
      state,
      f.priority ?? 0,
      f.attempt ?? (running ? 1 : 0),
      f.maxAttempts ?? 25,
      f.retry === undefined ? null : JSON.stringify(f.retry),
      JSON.stringify(f.headers ?? {}),
      f.runInMs ?? 0,
      token,
      f.leaseExpiresInMs ?? 30_000,
      running ? (f.workerId ?? "factory-worker") : (f.workerId ?? null),
      f.idempotencyKey ?? null,
      f.idempotencyTtlMs ?? 24 * 3600_000,
      JSON.stringify(errors),
      f.errorsDropped ?? 0,
      f.cancelRequested ?? false,
      FINAL.includes(state),
      state === "completed" ? (f.pruneInMs ?? 24 * 3600_000) : null,
    ],
  );
  return { id: rows[0]!.id, token };
}

/** makeJob, n times alike. */
export async function makeJobs(db: Queryable, n: number, f: JobFixture): Promise<MadeJob[]> {
  const out: MadeJob[] = [];
  for (let i = 0; i < n; i++) out.push(await makeJob(db, f));
  return out;
}
