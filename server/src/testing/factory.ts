import { DEFAULT_COMPLETED_RETENTION_MS, DEFAULT_LEASE_MS } from "../config.js";
import type { JobState } from "../model.js";
import type { Queryable } from "../store/db.js";

/**
 * The job factory for tests: inserts jobs in any state, with the columns
 * the broker's own statements would have left (docs/state-machine.md),
 * without going through the broker. Every spec that needs a job in a given
 * state (a running job with an expired lease, a dead one with a history)
 * makes it here, so the table's shape is written down once for tests.
 *
 * What "as the broker would" means, per state:
 *   - queued_at (the place in line) is set in every state;
 *   - running: attempt >= 1, a lease token, lease_expires_at,
 *     leased_for_ms and worker_id (a token exists only while the job runs:
 *     the jobs_lease_token_running CHECK);
 *   - a job that has run keeps worker_id and leased_for_ms after its lease
 *     ends, as ack and nack leave them;
 *   - completed, dead, cancelled: finished_at; completed: prune_at, the
 *     default retention after finishing and never before its key expires;
 *   - dead and retryable: the failed attempt in errors.
 * Times are by the database's clock, relative to now().
 */
export interface JobFixture {
  queue: string;
  state?: JobState;
  type?: string;
  payload?: Uint8Array;
  contentType?: string;
  priority?: number;
  /** Default 1 for states a job reaches only by running (running, retryable, completed, dead), else 0. */
  attempt?: number;
  maxAttempts?: number;
  /** jobs.retry as stored: {"initial_ms", "max_ms", "multiplier", "jitter"}, or anything, to test bad rows. */
  retry?: unknown;
  headers?: Record<string, string>;
  /** The job's own lease length (JobSpec.lease_duration, jobs.lease_ms). Default none. */
  leaseMs?: number;
  /** The length the current or last lease was granted with (leased_for_ms). Default leaseMs, else 30 s. */
  leasedForMs?: number;
  /** For running jobs: when the lease expires, from now (negative: already expired). Default leasedForMs. */
  leaseExpiresInMs?: number;
  /** The worker of the current or last lease. Default "factory-worker" for a job that has run. */
  workerId?: string;
  idempotencyKey?: string;
  /** When the key expires, from now (negative: its TTL has passed). Default 24 h when a key is set. */
  idempotencyTtlMs?: number;
  /**
   * run_at, from now. Default 60 s for scheduled and retryable jobs (they
   * wait for it), the finishing time for finished ones, else now.
   */
  runInMs?: number;
  /** For completed, dead and cancelled jobs: when they finished. Default now. */
  finishedAgoMs?: number;
  /** For completed jobs: prune_at, from now. Default: see above. */
  pruneInMs?: number;
  /** Default: for dead and retryable jobs, one entry for the attempt that failed; else none. */
  errors?: { attempt: number; message: string; at?: Date; workerId?: string }[];
  errorsDropped?: number;
  /** Only while running, or on a job cancelled while it ran. */
  cancelRequested?: boolean;
  concurrencyKey?: string;
  orderingKey?: string;
}

/** makeJobs' fixture: the queue and the key may differ per row (i counts from 0). */
export interface JobsFixture extends Omit<JobFixture, "queue" | "idempotencyKey"> {
  queue: string | ((i: number) => string);
  idempotencyKey?: (i: number) => string;
}

export interface MadeJob {
  id: string;
  /** The lease token's uuid for running jobs (the broker's token is `${id}.${token}`), else null. */
  token: string | null;
}

const FINAL: readonly JobState[] = ["completed", "dead", "cancelled"];
/** States a job reaches only through a lease. */
const HAS_RUN: readonly JobState[] = ["running", "retryable", "completed", "dead"];

// One statement for any number of rows, so that specs that need thousands
// of rows (plans and index choices) make them in one round trip, in id
// order. Every offset is in ms from the statement's now(). The text must not
// contain the words "UPDATE jobwire.jobs": store.spec.ts collects the plans
// whose text does.
const INSERT = `
INSERT INTO jobwire.jobs (queue, type, payload, content_type, state, priority, attempt, max_attempts, lease_ms, retry, headers,
                          created_at, queued_at, run_at, finished_at, prune_at, lease_token, lease_expires_at, leased_for_ms,
                          worker_id, cancel_requested, idempotency_key, idempotency_expires_at, errors, errors_dropped,
                          concurrency_key, ordering_key)
SELECT coalesce(($2::text[])[g], $1), $3, $4, $5, $6::jobwire.job_state, $7, $8, $9, $10, $11, $12,
       least(now(), t.queued_at), t.queued_at, t.run_at, t.finished_at,
       CASE WHEN $6 = 'completed' THEN coalesce(now() + $13 * interval '1 ms',
                                                greatest(t.finished_at + $14 * interval '1 ms', t.key_expires_at)) END,
       CASE WHEN $6 = 'running' THEN gen_random_uuid() END,
       CASE WHEN $6 = 'running' THEN now() + $15 * interval '1 ms' END,
       $16, $17, $18, ($19::text[])[g], t.key_expires_at,
       CASE WHEN $20::jsonb IS NOT NULL
            THEN coalesce((SELECT jsonb_agg(CASE WHEN e -> 'at' = 'null' THEN jsonb_set(e, '{at}', to_jsonb(coalesce(t.finished_at, now())))
                                                 ELSE e END ORDER BY i)
                           FROM jsonb_array_elements($20::jsonb) WITH ORDINALITY a(e, i)), '[]')
            WHEN $6 IN ('dead', 'retryable')
            THEN jsonb_build_array(jsonb_build_object('attempt', $8::int, 'message', 'factory: attempt failed',
                                                      'at', coalesce(t.finished_at, now()), 'worker_id', $17::text))
            ELSE '[]' END,
       $21, $22, $23
FROM generate_series(1, $24::int) g
CROSS JOIN LATERAL (SELECT now() - $25 * interval '1 ms' AS finished_at) f
CROSS JOIN LATERAL (
  SELECT CASE WHEN $6 IN ('completed', 'dead', 'cancelled') THEN f.finished_at END AS finished_at,
         coalesce(now() + $26 * interval '1 ms', CASE WHEN $6 IN ('completed', 'dead', 'cancelled') THEN f.finished_at ELSE now() END
                    + CASE WHEN $6 IN ('scheduled', 'retryable') THEN interval '60 seconds' ELSE interval '0' END) AS run_at,
         CASE WHEN ($19::text[])[g] IS NOT NULL THEN now() + $27 * interval '1 ms' END AS key_expires_at
) t0
CROSS JOIN LATERAL (
  -- The place in line: the due time at enqueue, which is in the past for
  -- every job but a scheduled one (and a retryable one waits from now).
  SELECT t0.*, CASE WHEN $6 = 'scheduled' THEN t0.run_at
                    ELSE least(t0.run_at, coalesce(t0.finished_at, now())) END AS queued_at
) t
ORDER BY g
RETURNING id::text, lease_token::text AS token`;

function check(f: JobsFixture, state: JobState, attempt: number, maxAttempts: number): void {
  const bad = (why: string) => {
    throw new Error(`makeJob: a ${state} job ${why}`);
  };
  if (maxAttempts < 1) bad("needs max_attempts >= 1");
  if (attempt < 0 || attempt > maxAttempts) bad(`cannot be at attempt ${attempt} of ${maxAttempts}`);
  if (HAS_RUN.includes(state) && attempt < 1) bad("has run at least once (attempt >= 1)");
  if (state === "retryable" && attempt >= maxAttempts) bad("has attempts left (else it would be dead)");
  if (f.cancelRequested && state !== "running" && !(state === "cancelled" && attempt > 0)) bad("cannot carry cancel_requested (only a running job can)");
  if (f.leaseExpiresInMs !== undefined && state !== "running") bad("has no lease");
  if (f.finishedAgoMs !== undefined && !FINAL.includes(state)) bad("has not finished");
  if (f.pruneInMs !== undefined && state !== "completed") bad("is never pruned");
}

/** Inserts n jobs alike in one statement; returns them in id order. */
export async function makeJobs(db: Queryable, n: number, f: JobsFixture): Promise<MadeJob[]> {
  const state = f.state ?? "available";
  const attempt = f.attempt ?? (HAS_RUN.includes(state) ? 1 : 0);
  const maxAttempts = f.maxAttempts ?? 25;
  check(f, state, attempt, maxAttempts);
  const ran = attempt > 0;
  const leasedForMs = f.leasedForMs ?? f.leaseMs ?? DEFAULT_LEASE_MS;
  const perRow = <T>(fn: ((i: number) => T) | undefined): T[] | null => (fn ? Array.from({ length: n }, (_, i) => fn(i)) : null);
  // An entry with no time gets the job's finishing time (else now), by the database's clock.
  const errors = f.errors?.map((e) => ({ attempt: e.attempt, message: e.message, at: e.at?.toISOString() ?? null, worker_id: e.workerId ?? null }));
  const { rows } = await db.query<MadeJob>(INSERT, [
    typeof f.queue === "string" ? f.queue : null,
    typeof f.queue === "function" ? perRow(f.queue) : null,
    f.type ?? "t",
    Buffer.from(f.payload ?? new Uint8Array(0)),
    f.contentType ?? "application/json",
    state,
    f.priority ?? 0,
    attempt,
    maxAttempts,
    f.leaseMs ?? null,
    f.retry === undefined ? null : JSON.stringify(f.retry),
    JSON.stringify(f.headers ?? {}),
    f.pruneInMs ?? null,
    DEFAULT_COMPLETED_RETENTION_MS,
    f.leaseExpiresInMs ?? leasedForMs,
    ran ? leasedForMs : null,
    f.workerId ?? (ran ? "factory-worker" : null),
    f.cancelRequested ?? false,
    perRow(f.idempotencyKey),
    errors ? JSON.stringify(errors) : null,
    f.errorsDropped ?? 0,
    f.concurrencyKey ?? null,
    f.orderingKey ?? null,
    n,
    f.finishedAgoMs ?? 0,
    f.runInMs ?? null,
    f.idempotencyTtlMs ?? 24 * 3600_000,
  ]);
  return rows.sort((a, b) => a.id.length - b.id.length || (a.id < b.id ? -1 : 1));
}

/** Inserts one job. */
export async function makeJob(db: Queryable, f: JobFixture): Promise<MadeJob> {
  const { idempotencyKey, ...rest } = f;
  const [made] = await makeJobs(db, 1, idempotencyKey === undefined ? rest : { ...rest, idempotencyKey: () => idempotencyKey });
  return made!;
}

/** Existing jobs, by id or ids, or every job of a queue. */
export type JobTarget = string | string[] | { queue: string };

function targetSql(t: JobTarget): [string, unknown] {
  return typeof t === "object" && !Array.isArray(t) ? ["j.queue = $1", t.queue] : ["j.id = ANY($1::bigint[])", typeof t === "string" ? [t] : t];
}

async function moved(db: Queryable, what: string, t: JobTarget, sql: string, params: unknown[]): Promise<number> {
  const { rowCount } = await db.query(sql, params);
  const want = typeof t === "string" ? 1 : Array.isArray(t) ? new Set(t).size : null;
  if ((want === null && !rowCount) || (want !== null && rowCount !== want)) {
    throw new Error(`${what}: ${rowCount ?? 0} of ${want ?? "the queue's"} jobs could be moved (${JSON.stringify(t)})`);
  }
  return rowCount ?? 0;
}

/** Which of a job's times ageJob places; the rest move with it. */
const ANCHORS = {
  finishedAgoMs: "finished_at",
  dueAgoMs: "run_at",
  createdAgoMs: "created_at",
  keyExpiredAgoMs: "idempotency_expires_at",
} as const;

/**
 * Moves existing jobs back in time, as if everything had happened earlier:
 * the one time named is set to that long ago, and every other time of the
 * job (created, queued, due, lease expiry, finished, prune, key expiry, its
 * errors' times) moves by the same amount. Instead of waiting for a
 * retention, a TTL or a backlog's age. Throws unless every target job has
 * the time named (a dead job for finishedAgoMs, a keyed one for
 * keyExpiredAgoMs).
 */
export async function ageJob(db: Queryable, target: JobTarget, by: Partial<Record<keyof typeof ANCHORS, number>>): Promise<number> {
  const set = Object.entries(by).filter(([, v]) => v !== undefined) as [keyof typeof ANCHORS, number][];
  if (set.length !== 1) throw new Error("ageJob: name exactly one time to place");
  const [[key, agoMs]] = set as [[keyof typeof ANCHORS, number]];
  const anchor = ANCHORS[key];
  const [where, value] = targetSql(target);
  const shift = (c: string) => `${c} = j.${c} - s.d`;
  return moved(
    db,
    "ageJob",
    target,
    `WITH s AS (SELECT j.id, j.${anchor} - (now() - $2 * interval '1 ms') AS d FROM jobwire.jobs j WHERE ${where} AND j.${anchor} IS NOT NULL)
     UPDATE jobwire.jobs j
     SET ${["created_at", "queued_at", "run_at", "finished_at", "prune_at", "lease_expires_at", "idempotency_expires_at"].map(shift).join(", ")},
         errors = (SELECT coalesce(jsonb_agg(CASE WHEN e ? 'at' THEN jsonb_set(e, '{at}', to_jsonb((e ->> 'at')::timestamptz - s.d)) ELSE e END
                                             ORDER BY i), '[]')
                   FROM jsonb_array_elements(j.errors) WITH ORDINALITY a(e, i))
     FROM s WHERE j.id = s.id`,
    [value, agoMs],
  );
}

/**
 * Lets running jobs' leases run out (`agoMs` ago, default 1 s), as when a
 * worker stops heartbeating: the reaper's next pass takes them. Throws
 * unless every target job is running.
 */
export async function expireLease(db: Queryable, target: JobTarget, agoMs = 1000): Promise<number> {
  const [where, value] = targetSql(target);
  return moved(
    db,
    "expireLease",
    target,
    `UPDATE jobwire.jobs j SET lease_expires_at = now() - $2 * interval '1 ms' WHERE ${where} AND j.state = 'running'`,
    [value, agoMs],
  );
}
