import { query, type Queryable } from "../db.js";

/** Promotes due scheduled and retryable jobs, and wakes their queues. */
const PROMOTE_DUE = `
WITH due AS (
  SELECT id FROM jobwire.jobs
  WHERE state IN ('scheduled', 'retryable') AND run_at <= now()
  ORDER BY run_at
  LIMIT $1
  FOR UPDATE SKIP LOCKED
), moved AS (
  UPDATE jobwire.jobs j SET state = 'available' FROM due WHERE j.id = due.id RETURNING j.queue
)
SELECT m.queue, m.n, pg_notify('jobwire', 'a:' || m.queue) AS notified
FROM (SELECT queue, count(*)::int AS n FROM moved GROUP BY queue) m`;

/** Milliseconds until the next scheduled or retryable job is due, by the database's clock. */
const NEXT_DUE = `
SELECT extract(epoch FROM min(run_at) - now()) * 1000 AS ms
FROM jobwire.jobs WHERE state IN ('scheduled', 'retryable')`;

/** Moves due jobs to available; returns how many per queue. */
export async function promoteDue(db: Queryable, limit: number): Promise<Map<string, number>> {
  const { rows } = await query<{ queue: string; n: number }>(db, PROMOTE_DUE, [limit], "jobwire_promote");
  return new Map(rows.map((r) => [r.queue, r.n]));
}

/** Milliseconds until the next job is due (negative if overdue), or null when none waits. */
export async function msUntilNextDue(db: Queryable): Promise<number | null> {
  const { rows } = await query<{ ms: string | null }>(db, NEXT_DUE, [], "jobwire_next_due");
  const ms = rows[0]?.ms;
  return ms === null || ms === undefined ? null : Number(ms);
}
