import { query, type Queryable } from "../db.js";

/**
 * Completed jobs due for pruning (migrations/005_retention.sql), oldest
 * first. SKIP LOCKED, so replicas split the work and the pruner never waits
 * on a row another statement holds.
 */
const PRUNE_COMPLETED = `
WITH doomed AS (
  SELECT ctid FROM jobwire.jobs
  WHERE state = 'completed' AND prune_at <= now()
  ORDER BY prune_at
  LIMIT $1
  FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM jobwire.jobs j WHERE j.ctid = ANY (ARRAY(SELECT ctid FROM doomed)) RETURNING 1
)
SELECT count(*)::int AS n FROM gone`;

/** Deletes up to `limit` completed jobs whose retention has passed; returns how many. */
export async function pruneCompleted(db: Queryable, limit: number): Promise<number> {
  const { rows } = await query<{ n: number }>(db, PRUNE_COMPLETED, [limit], "jobwire_prune_completed");
  return rows[0]?.n ?? 0;
}
