import type { Job, JobState, ListFilter, ReplayFilter } from "../../model.js";
import { query, type Queryable } from "../db.js";
import { JOB_COLUMNS, toJob, type JobRow } from "./rows.js";

/** Jobs by id, for producers and operators: read, cancel, list, replay. */

const GET_JOB = `SELECT ${JOB_COLUMNS} FROM jobwire.jobs WHERE id = $1`;

/**
 * Waiting jobs are cancelled at once; a running one is asked to stop. A
 * cancelled job with an ordering key lets the next one of its key start:
 * its queue is woken at commit.
 */
const CANCEL = `
WITH c AS (
  UPDATE jobwire.jobs
  SET state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
      cancel_requested = (state = 'running'),
      finished_at = CASE WHEN state = 'running' THEN NULL ELSE now() END
  WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable', 'running')
  RETURNING ${JOB_COLUMNS}
)
SELECT c.*, CASE WHEN c.ordering_key IS NOT NULL AND c.state = 'cancelled' THEN pg_notify('jobwire', 'a:' || c.queue) END AS notified
FROM c`;

const FILTER_IDS = "SELECT id FROM jobwire.jobs WHERE id = ANY($1::bigint[]) AND state = ANY($2::jobwire.job_state[]) ORDER BY id";

/**
 * Replay: a fresh attempt budget, the error history kept. The state check
 * makes it idempotent: a job already replayed is no longer dead. A
 * replayed job goes to the back of the line (queued_at = now()), and of its
 * ordering key, if it has one.
 */
const REPLAY_IDS = `
WITH target AS (
  SELECT id FROM jobwire.jobs WHERE id = ANY($1::bigint[]) AND state = ANY($2::jobwire.job_state[])
  ORDER BY id FOR UPDATE SKIP LOCKED
), moved AS (
  UPDATE jobwire.jobs j
  SET state = 'available', attempt = 0, run_at = now(), queued_at = now(), finished_at = NULL, cancel_requested = false,
      lease_token = NULL, lease_expires_at = NULL, worker_id = NULL
  FROM target WHERE j.id = target.id
  RETURNING j.id, j.queue, j.headers
)
SELECT m.id, m.queue, m.headers, pg_notify('jobwire', 'a:' || m.queue) AS notified FROM moved m`;

// "state IN ('dead', 'cancelled')" is implied by $2 (always a subset) but
// written out, so that a plan made without $2's value (a prepared
// statement's generic plan) can still prove it and read jobs_finished_idx
// instead of the whole history (plans.spec.ts).
const SELECT_REPLAYABLE = `
SELECT id FROM jobwire.jobs j
WHERE j.queue = $1 AND j.state IN ('dead', 'cancelled') AND j.state = ANY($2::jobwire.job_state[])
  AND ($3::text IS NULL OR j.type = $3)
  AND ($4::text IS NULL OR strpos(j.errors -> -1 ->> 'message', $4) > 0)
  AND ($5::timestamptz IS NULL OR j.finished_at >= $5)
  AND ($6::timestamptz IS NULL OR j.finished_at < $6)
  AND j.id > $7::bigint
ORDER BY j.id
LIMIT $8`;

const LIST_JOBS = `
SELECT ${JOB_COLUMNS} FROM jobwire.jobs
WHERE ($1::text IS NULL OR queue = $1)
  AND ($2::text IS NULL OR type = $2)
  AND (cardinality($3::jobwire.job_state[]) = 0 OR state = ANY($3::jobwire.job_state[]))
  AND ($4::bigint IS NULL OR id < $4)
  AND ($6::text IS NULL OR strpos(errors -> -1 ->> 'message', $6) > 0)
ORDER BY id DESC
LIMIT $5`;

export async function getJob(db: Queryable, id: string): Promise<Job | null> {
  const { rows } = await query<JobRow>(db, GET_JOB, [id], "jobwire_get_job");
  return rows[0] ? toJob(rows[0]) : null;
}

/** Returns the job after the change, or null when nothing was cancellable. */
export async function cancel(db: Queryable, id: string): Promise<Job | null> {
  const { rows } = await query<JobRow>(db, CANCEL, [id], "jobwire_cancel");
  return rows[0] ? toJob(rows[0]) : null;
}

/** The ids among `ids` that are in one of `states`. */
export async function filterIds(db: Queryable, ids: string[], states: JobState[]): Promise<string[]> {
  const { rows } = await query<{ id: string }>(db, FILTER_IDS, [ids, states], "jobwire_filter_ids");
  return rows.map((r) => r.id);
}

export interface Replayed {
  id: string;
  queue: string;
  headers: Record<string, string>;
}

export async function replayIds(db: Queryable, ids: string[], states: JobState[]): Promise<Replayed[]> {
  if (ids.length === 0) return [];
  const { rows } = await query<Replayed>(db, REPLAY_IDS, [ids, states], "jobwire_replay_ids");
  return rows;
}

export async function selectReplayable(db: Queryable, f: ReplayFilter, states: JobState[], afterId: string, limit: number): Promise<string[]> {
  const { rows } = await query<{ id: string }>(
    db,
    SELECT_REPLAYABLE,
    [f.queue, states, f.type, f.errorContains, f.finishedAfter, f.finishedBefore, afterId, limit],
    "jobwire_select_replayable",
  );
  return rows.map((r) => r.id);
}

export async function listJobs(db: Queryable, f: ListFilter): Promise<Job[]> {
  const { rows } = await query<JobRow>(db, LIST_JOBS, [f.queue, f.type, f.states, f.beforeId, f.limit, f.errorContains], "jobwire_list_jobs");
  return rows.map(toJob);
}

/** The distinct queues of the given jobs. */
export async function queuesOf(db: Queryable, ids: string[]): Promise<string[]> {
  const { rows } = await query<{ queue: string }>(db, "SELECT DISTINCT queue FROM jobwire.jobs WHERE id = ANY($1::bigint[])", [ids], "jobwire_queues_of");
  return rows.map((r) => r.queue);
}

/** The trace context (traceparent, tracestate) the given jobs carry in their headers, for those that have one. */
export async function traceHeaders(db: Queryable, ids: string[]): Promise<Record<string, string>[]> {
  const { rows } = await query<{ headers: Record<string, string> }>(
    db,
    `SELECT jsonb_strip_nulls(jsonb_build_object('traceparent', headers ->> 'traceparent', 'tracestate', headers ->> 'tracestate')) AS headers
     FROM jobwire.jobs WHERE id = ANY($1::bigint[]) AND headers ? 'traceparent'`,
    [ids],
    "jobwire_trace_headers",
  );
  return rows.map((r) => r.headers);
}

export async function notify(db: Queryable, queue: string): Promise<void> {
  await query(db, "SELECT pg_notify('jobwire', $1)", [`a:${queue}`], "jobwire_notify");
}
