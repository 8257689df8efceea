import type { ClaimedJob, Job } from "../../model.js";
import { query, type Queryable } from "../db.js";
import { cmpId, jobErrors, type JobRow } from "./rows.js";

/**
 * Claims up to `limit` available jobs from `queues` for one stream: the SQL
 * function sql/functions/claim_jobs.sql, planned once per session. A row is
 * claimed by exactly one statement: FOR UPDATE SKIP LOCKED, and the lock
 * re-checks state = 'available'.
 *
 * Its UPDATE once found the claimed rows through a join to the CTE that
 * locked them; once the backlog grew, Postgres hashed a sequential scan of
 * the whole table for it: 43 ms per 500-job claim over 50,000 available
 * jobs, against ~5 ms with the rows passed as an array (of ids then, of
 * row addresses now).
 */
const CLAIM = "SELECT * FROM jobwire.claim_jobs($1::text[], $2::int, $3::int, $4::int, $5::text)";

/** A claimed row: the columns claim_jobs returns (what the claim did not set itself; errors null when empty). */
type ClaimRow = Omit<JobRow, "state" | "finished_at" | "cancel_requested" | "worker_id" | "errors"> & {
  errors: JobRow["errors"] | null;
  lease_token: string;
};

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
    errorsDropped: 0,
    leaseExpiresAt: r.lease_expires_at,
    leaseMs: r.lease_ms,
    cancelRequested: false,
    workerId,
    concurrencyKey: null,
    orderingKey: null,
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
): Promise<ClaimedJob[]> {
  const { rows } = await query<ClaimRow>(db, CLAIM, [queues, limit, workerLeaseMs, defaultLeaseMs, workerId], "jobwire_claim");
  // RETURNING has no defined order; deliver in claim order. It usually
  // comes back in that order already (primary-key order, one priority):
  // check in one pass before sorting.
  let sorted = true;
  for (let i = 1; i < rows.length && sorted; i++) sorted = claimOrder(rows[i - 1]!, rows[i]!) <= 0;
  if (!sorted) rows.sort(claimOrder);
  return rows.map((r) => ({ job: claimedJob(r, workerId), token: r.lease_token, expiresAt: r.lease_expires_at! }));
}
