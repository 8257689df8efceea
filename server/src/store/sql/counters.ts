import { query, type Queryable } from "../db.js";

/**
 * Cluster-wide counts per queue (migrations/008_operators.sql): jobs
 * enqueued (by any path, SQL included), completed and failed.
 */
export type CounterKind = "enqueued" | "completed" | "failed";

/**
 * Folds up to $1 deltas into the totals, in one transaction; SKIP LOCKED,
 * so replicas folding at once take different rows and never wait.
 */
const FOLD = `
WITH moved AS (
  DELETE FROM jobwire.counter_deltas
  WHERE id IN (SELECT id FROM jobwire.counter_deltas ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
  RETURNING queue, kind, n
), folded AS (
  INSERT INTO jobwire.counter_totals AS t (queue, kind, total)
  SELECT queue, kind, sum(n) FROM moved GROUP BY queue, kind
  ON CONFLICT (queue, kind) DO UPDATE SET total = t.total + EXCLUDED.total
  RETURNING 1
)
SELECT (SELECT count(*)::int FROM moved) AS n`;

/** Totals plus the deltas not folded yet: the count as of this statement's snapshot. */
const READ = `
SELECT queue, kind, sum(total)::bigint AS total FROM (
  SELECT queue, kind, total FROM jobwire.counter_totals
  UNION ALL
  SELECT queue, kind, n FROM jobwire.counter_deltas
) c GROUP BY queue, kind`;

/** Folds up to `limit` deltas; returns how many. */
export async function foldCounters(db: Queryable, limit: number): Promise<number> {
  const { rows } = await query<{ n: number }>(db, FOLD, [limit], "jobwire_fold_counters");
  return rows[0]?.n ?? 0;
}

export interface CounterRow {
  queue: string;
  kind: CounterKind;
  total: number;
}

export async function readCounters(db: Queryable): Promise<CounterRow[]> {
  const { rows } = await query<{ queue: string; kind: CounterKind; total: string }>(db, READ, [], "jobwire_read_counters");
  return rows.map((r) => ({ queue: r.queue, kind: r.kind, total: Number(r.total) }));
}
