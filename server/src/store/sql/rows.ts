import type { Job, JobError, JobState, RetryPolicy } from "../../model.js";

/** A jobwire.jobs row as node-postgres returns it (ids stay strings: see db.ts). */
export interface JobRow {
  id: string;
  queue: string;
  type: string;
  payload: Buffer;
  content_type: string;
  state: JobState;
  priority: number;
  attempt: number;
  max_attempts: number;
  run_at: Date;
  created_at: Date;
  finished_at: Date | null;
  headers: Record<string, string>;
  idempotency_key: string | null;
  errors: ErrorJson[];
  errors_dropped: number;
  lease_expires_at: Date | null;
  lease_ms: number | null;
  cancel_requested: boolean;
  worker_id: string | null;
  concurrency_key: string | null;
  ordering_key: string | null;
}

/** One entry of jobs.errors. */
export interface ErrorJson {
  attempt: number;
  message: string;
  at: string;
  worker_id: string | null;
}

/** The columns every statement that returns whole jobs selects. */
export const JOB_COLUMNS = `id, queue, type, payload, content_type, state, priority, attempt, max_attempts, run_at,
  created_at, finished_at, headers, idempotency_key, errors, errors_dropped, lease_expires_at, lease_ms, cancel_requested,
  worker_id, concurrency_key, ordering_key`;

export function jobErrors(errors: ErrorJson[]): JobError[] {
  return errors.map((e): JobError => ({ attempt: e.attempt, message: e.message, at: new Date(e.at), workerId: e.worker_id ?? "" }));
}

export function toJob(r: JobRow): Job {
  return {
    id: r.id,
    queue: r.queue,
    type: r.type,
    payload: r.payload,
    contentType: r.content_type,
    state: r.state,
    priority: r.priority,
    attempt: r.attempt,
    maxAttempts: r.max_attempts,
    runAt: r.run_at,
    createdAt: r.created_at,
    finishedAt: r.finished_at,
    headers: r.headers,
    idempotencyKey: r.idempotency_key,
    errors: jobErrors(r.errors),
    errorsDropped: r.errors_dropped,
    leaseExpiresAt: r.lease_expires_at,
    leaseMs: r.lease_ms,
    cancelRequested: r.cancel_requested,
    workerId: r.worker_id,
    concurrencyKey: r.concurrency_key,
    orderingKey: r.ordering_key,
  };
}

/** A retry policy as stored in jobs.retry and queues.retry: {"initial_ms", "max_ms", "multiplier", "jitter"}, each optional. */
export function policyJson(p: RetryPolicy | null): string | null {
  if (!p) return null;
  const o: Record<string, number> = {};
  if (p.initialMs !== undefined) o.initial_ms = p.initialMs;
  if (p.maxMs !== undefined) o.max_ms = p.maxMs;
  if (p.multiplier !== undefined) o.multiplier = p.multiplier;
  if (p.jitter !== undefined) o.jitter = p.jitter;
  return Object.keys(o).length ? JSON.stringify(o) : null;
}

export function policyFromJson(j: Record<string, number> | null): RetryPolicy | null {
  if (!j) return null;
  const p: RetryPolicy = {};
  if (typeof j.initial_ms === "number") p.initialMs = j.initial_ms;
  if (typeof j.max_ms === "number") p.maxMs = j.max_ms;
  if (typeof j.multiplier === "number") p.multiplier = j.multiplier;
  if (typeof j.jitter === "number") p.jitter = j.jitter;
  return p;
}

/** An id as Postgres prints it: "007" is job 7. */
export function canonicalId(id: string): string {
  return id.length > 1 && id.charCodeAt(0) === 48 ? BigInt(id).toString() : id;
}

/** Compares decimal ids without leading zeros numerically. */
export function cmpId(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
