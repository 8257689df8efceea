import type { FailedJob, JobState, LeaseRef } from "../../model.js";
import { BrokerError } from "../../errors.js";
import { query, type Queryable } from "../db.js";

/**
 * A failed attempt, by Nack or by the reaper. The one rule: cancel-requested
 * jobs become cancelled; permanent failures and exhausted attempts become
 * dead; the rest wait out their backoff as retryable (or go straight to
 * available when the wait is zero). The error joins the history, which
 * sql/functions/push_error.sql keeps bounded.
 */
const FAIL_SET = `
SET state = d.next_state,
    run_at = CASE WHEN d.next_state IN ('retryable', 'available') THEN d.next_run_at ELSE j.run_at END,
    finished_at = CASE WHEN d.next_state IN ('dead', 'cancelled') THEN now() END,
    errors = e.kept, errors_dropped = e.dropped_total,
    lease_token = NULL, lease_expires_at = NULL`;

// The decision, per failed row: where it goes next and when, and the entry for its history.
const FAIL_DECIDE = `
  SELECT f.id, r.next_run_at, j.errors, j.errors_dropped,
         jsonb_build_object('attempt', j.attempt, 'message', f.message, 'at', now(), 'worker_id', j.worker_id) AS entry,
         CASE WHEN j.cancel_requested THEN 'cancelled'
              WHEN f.permanent OR j.attempt >= j.max_attempts THEN 'dead'
              WHEN r.next_run_at <= now() THEN 'available'
              ELSE 'retryable' END::jobwire.job_state AS next_state
  FROM failures f JOIN jobwire.jobs j ON j.id = f.id
  CROSS JOIN LATERAL (
    SELECT now() + coalesce(f.retry_after_ms * interval '1 millisecond',
                            jobwire.retry_delay(j.attempt, j.retry, (SELECT q.retry FROM jobwire.queues q WHERE q.name = j.queue))) AS next_run_at
  ) r`;

/**
 * What a failure statement returns. `wakes`: the job held something a
 * waiting job may be held back for (its queue has limits, or it had an
 * ordering key), so the queue's streams should look again.
 */
const RETURNING = `j.id, j.queue, j.state, j.run_at, j.headers, j.attempt,
  j.ordering_key IS NOT NULL OR EXISTS (
    SELECT 1 FROM jobwire.queues q WHERE q.name = j.queue AND (q.max_running IS NOT NULL OR q.max_running_per_key IS NOT NULL
                                                               OR q.rate_count IS NOT NULL OR q.key_rate_count IS NOT NULL)) AS wakes`;

/** A failed-attempt statement: `failures` selects (and locks) the rows, with id, permanent, retry_after_ms, message. */
function failStatement(failures: string): string {
  return `
WITH failures AS (${failures}), d AS (${FAIL_DECIDE}), failed AS (
  UPDATE jobwire.jobs j ${FAIL_SET}
  FROM d CROSS JOIN LATERAL jobwire.push_error(d.errors, d.errors_dropped, d.entry) e
  WHERE j.id = d.id
  RETURNING ${RETURNING}
), counted AS (
  INSERT INTO jobwire.counter_deltas (queue, kind, n) SELECT queue, 'failed', count(*) FROM failed GROUP BY queue
)
SELECT * FROM failed`;
}

const NACK = failStatement(`
  SELECT j.id, $3::bool AS permanent, $4::bigint AS retry_after_ms, $5::text AS message
  FROM jobwire.jobs j
  WHERE j.id = $1 AND j.state = 'running' AND j.lease_token = $2
  FOR UPDATE`);

/**
 * The reaper: leases past their expiry fail their attempt with "lease
 * expired". Batched, and SKIP LOCKED so replicas split the work.
 */
const REAP = failStatement(`
  SELECT j.id, false AS permanent, NULL::bigint AS retry_after_ms, 'lease expired' AS message
  FROM jobwire.jobs j
  WHERE j.state = 'running' AND j.lease_expires_at < now()
  ORDER BY j.id
  LIMIT $1
  FOR UPDATE SKIP LOCKED`);

/** One expired lease, by id: how the reaper goes on past a row that fails its batch. */
const REAP_ONE = failStatement(`
  SELECT j.id, false AS permanent, NULL::bigint AS retry_after_ms, 'lease expired' AS message
  FROM jobwire.jobs j
  WHERE j.id = $1 AND j.state = 'running' AND j.lease_expires_at < now()
  FOR UPDATE SKIP LOCKED`);

/** The ids of expired leases, computing nothing about them. */
const EXPIRED_IDS = `
SELECT j.id FROM jobwire.jobs j
WHERE j.state = 'running' AND j.lease_expires_at < now()
ORDER BY j.id
LIMIT $1`;

/**
 * Dead-letters a running job that no failure statement can handle, with
 * the reason in its history. It computes nothing but the error entry, so
 * what broke the row's retry (its policy, say) cannot break this too. The
 * history stays bounded (push_error.sql); should even that fail on the
 * row's own history, QUARANTINE_BARE replaces the history with the reason,
 * counting what it dropped.
 */
const QUARANTINE_ENTRY = `jsonb_build_object('attempt', j.attempt, 'message', $2::text, 'at', now(), 'worker_id', j.worker_id)`;
const QUARANTINE_WHERE = `WHERE j.id = $1 AND j.state = 'running' AND ($3::uuid IS NULL OR j.lease_token = $3)`;
const QUARANTINE = `
UPDATE jobwire.jobs j
SET state = 'dead', finished_at = now(), lease_token = NULL, lease_expires_at = NULL,
    (errors, errors_dropped) = (SELECT p.kept, p.dropped_total FROM jobwire.push_error(j.errors, j.errors_dropped, ${QUARANTINE_ENTRY}) p)
${QUARANTINE_WHERE}
RETURNING ${RETURNING}`;
const QUARANTINE_BARE = `
UPDATE jobwire.jobs j
SET state = 'dead', finished_at = now(), lease_token = NULL, lease_expires_at = NULL,
    errors = jsonb_build_array(${QUARANTINE_ENTRY}),
    errors_dropped = j.errors_dropped + CASE WHEN jsonb_typeof(j.errors) = 'array' THEN jsonb_array_length(j.errors) ELSE 0 END
${QUARANTINE_WHERE}
RETURNING ${RETURNING}`;

interface FailedRow {
  id: string;
  queue: string;
  state: JobState;
  run_at: Date;
  headers: Record<string, string>;
  attempt: number;
  wakes: boolean;
}

function toFailed(r: FailedRow): FailedJob {
  return { id: r.id, queue: r.queue, state: r.state, runAt: r.run_at, headers: r.headers, attempt: r.attempt, wakesQueue: r.wakes };
}

/** Fails one attempt; null when the lease is not current. */
export async function nack(
  db: Queryable,
  lease: LeaseRef,
  message: string,
  permanent: boolean,
  retryAfterMs: number | null,
): Promise<FailedJob | null> {
  const { rows } = await query<FailedRow>(db, NACK, [lease.id, lease.token, permanent, retryAfterMs, message], "jobwire_nack");
  return rows[0] ? toFailed(rows[0]) : null;
}

/** Fails the attempts of up to `limit` expired leases. */
export async function reapExpired(db: Queryable, limit: number): Promise<FailedJob[]> {
  const { rows } = await query<FailedRow>(db, REAP, [limit], "jobwire_reap");
  return rows.map(toFailed);
}

/** The ids of up to `limit` expired leases. */
export async function expiredIds(db: Queryable, limit: number): Promise<string[]> {
  const { rows } = await query<{ id: string }>(db, EXPIRED_IDS, [limit], "jobwire_expired_ids");
  return rows.map((r) => r.id);
}

/** Fails one expired lease's attempt; null when it is no longer expired (or another replica holds it). */
export async function reapOne(db: Queryable, id: string): Promise<FailedJob | null> {
  const { rows } = await query<FailedRow>(db, REAP_ONE, [id], "jobwire_reap_one");
  return rows[0] ? toFailed(rows[0]) : null;
}

/**
 * Dead-letters a running job with `reason`; null when it is no longer
 * running (or, given a token, no longer under that lease).
 */
export async function quarantine(db: Queryable, id: string, reason: string, token: string | null): Promise<FailedJob | null> {
  let rows: FailedRow[];
  try {
    ({ rows } = await query<FailedRow>(db, QUARANTINE, [id, reason, token], "jobwire_quarantine"));
  } catch (err) {
    if (err instanceof BrokerError) throw err; // the store is unavailable: nothing to do about the row
    ({ rows } = await query<FailedRow>(db, QUARANTINE_BARE, [id, reason, token], "jobwire_quarantine_bare"));
  }
  return rows[0] ? toFailed(rows[0]) : null;
}
