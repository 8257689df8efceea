import type { ClaimedJob, Job } from "../../model.js";
import { query, type Queryable } from "../db.js";
import { cmpId, jobErrors, type JobRow } from "./rows.js";

/**
 * Claims up to `limit` available jobs from `queues` for one stream: the SQL
 * function sql/functions/claim_jobs.sql (a fast path for queues that use no
 * flow control, a gated one for the rest), each planned once per session. A
 * row is claimed by exactly one statement: FOR UPDATE SKIP LOCKED, and the
 * lock re-checks state = 'available'.
 */
const CLAIM = "SELECT * FROM jobwire.claim_jobs($1::text[], $2::int, $3::int, $4::int, $5::text)";

/** A claimed row (jobwire.claimed): what the claim did not set itself; errors null when empty. */
type ClaimRow = Omit<JobRow, "state" | "finished_at" | "cancel_requested" | "worker_id" | "errors"> & {
  errors: JobRow["errors"] | null;
  lease_token: string;
};

export interface Claim {
  jobs: ClaimedJob[];
  /**
   * When a rate limit cut this claim short: the earliest time its queue's
   * next job may start. Nothing else wakes a stream then (no NOTIFY comes
   * when a limiter refills), so the stream looks again at that time.
   */
  retryAt: Date | null;
}

/**
 * A claimed row as a Job, with what the claim set filled in. Written out
 * field by field like toJob on purpose: building it from the row with an
 * object spread, or filling the row in place and calling toJob, each raised
 * the broker's CPU per job in a burn-down from 21 to 33 us.
 */
function claimedJob(r: ClaimRow, workerId: string): Job {
  return {
    id: r.id,
    queue: r.queue,
    type: r.type,
    payload: r.payload,
    contentType: r.content_type,
    state: "running",
    priority: r.priority,
    attempt: r.attempt,
    maxAttempts: r.max_attempts,
    runAt: r.run_at,
    createdAt: r.created_at,
    finishedAt: null,
    headers: r.headers,
    idempotencyKey: r.idempotency_key,
    errors: r.errors === null ? [] : jobErrors(r.errors),
    errorsDropped: r.errors_dropped,
    leaseExpiresAt: r.lease_expires_at,
    leaseMs: r.lease_ms,
    cancelRequested: false,
    workerId,
    concurrencyKey: r.concurrency_key,
    orderingKey: r.ordering_key,
  };
}

/** Delivery order: priority first (higher first), then due time, then id. */
function claimOrder(a: ClaimRow, b: ClaimRow): number {
  return b.priority - a.priority || a.run_at.getTime() - b.run_at.getTime() || cmpId(a.id, b.id);
}

export async function claim(
  db: Queryable,
  queues: string[],
  limit: number,
  workerId: string,
  workerLeaseMs: number | null,
  defaultLeaseMs: number,
): Promise<Claim> {
  const { rows } = await query<ClaimRow>(db, CLAIM, [queues, limit, workerLeaseMs, defaultLeaseMs, workerId], "jobwire_claim");
  // A row without an id is a rate limit's next start, not a job.
  let retryAt: Date | null = null;
  let jobs = rows;
  if (rows.some((r) => r.id === null)) {
    jobs = rows.filter((r) => r.id !== null);
    for (const r of rows) if (r.id === null && (retryAt === null || r.lease_expires_at! < retryAt)) retryAt = r.lease_expires_at;
  }
  // RETURNING has no defined order; deliver in claim order. It usually
  // comes back in that order already (primary-key order, one priority):
  // check in one pass before sorting.
  let sorted = true;
  for (let i = 1; i < jobs.length && sorted; i++) sorted = claimOrder(jobs[i - 1]!, jobs[i]!) <= 0;
  if (!sorted) jobs.sort(claimOrder);
  return { jobs: jobs.map((r) => ({ job: claimedJob(r, workerId), token: r.lease_token, expiresAt: r.lease_expires_at! })), retryAt };
}
