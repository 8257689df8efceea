import type { JobState, QueueStats } from "../../model.js";
import { JOB_STATES } from "../../model.js";
import { query, type Queryable } from "../db.js";

/** Counts per queue and state, for GetQueueStats, /metrics and the dashboard. */

const QUEUE_COUNTS = `
SELECT queue, state, count(*)::bigint AS n FROM jobwire.jobs
WHERE cardinality($1::text[]) = 0 OR queue = ANY($1::text[])
GROUP BY queue, state`;

/**
 * Available jobs live in three partial indexes (plain, with a concurrency
 * key, with an ordering key: migrations/007_flow_control.sql); an arm per
 * index, each with exactly its predicate, so that no plan reads the whole
 * table (plans.spec.ts).
 */
const AVAILABLE_ARMS = `
  SELECT queue, run_at FROM jobwire.jobs
  WHERE state = 'available' AND concurrency_key IS NULL AND ordering_key IS NULL AND (cardinality($1::text[]) = 0 OR queue = ANY($1::text[]))
  UNION ALL
  SELECT queue, run_at FROM jobwire.jobs
  WHERE state = 'available' AND concurrency_key IS NOT NULL AND ordering_key IS NULL AND (cardinality($1::text[]) = 0 OR queue = ANY($1::text[]))
  UNION ALL
  SELECT queue, run_at FROM jobwire.jobs
  WHERE ordering_key IS NOT NULL AND state IN ('available', 'running', 'retryable') AND state = 'available'
    AND (cardinality($1::text[]) = 0 OR queue = ANY($1::text[]))`;

const OLDEST_AVAILABLE = `
SELECT queue, extract(epoch FROM now() - min(run_at)) * 1000 AS age_ms FROM (${AVAILABLE_ARMS}) a
GROUP BY queue`;

const PAUSED = `SELECT name FROM jobwire.queues WHERE paused AND (cardinality($1::text[]) = 0 OR name = ANY($1::text[]))`;

/**
 * Backlog gauges: only states with a partial index, never the completed
 * history. One arm per partial index, each with exactly its predicate: as
 * one "state IN (...)" over five states, no index matched it and every
 * scrape read the whole table, history included (plans.spec.ts).
 */
const METRIC_COUNTS = `
SELECT queue, state::text, count(*)::int AS n FROM jobwire.jobs
WHERE state IN ('scheduled', 'retryable') GROUP BY queue, state
UNION ALL
SELECT queue, 'available', count(*)::int FROM (${AVAILABLE_ARMS.replaceAll("$1::text[]", "'{}'::text[]")}) a GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*)::int FROM jobwire.jobs WHERE state = 'running' GROUP BY queue
UNION ALL
SELECT queue, 'dead', count(*)::int FROM jobwire.jobs WHERE state IN ('dead', 'cancelled') AND state = 'dead' GROUP BY queue`;

export async function queueStats(db: Queryable, queues: string[]): Promise<QueueStats[]> {
  const [counts, oldest, paused] = await Promise.all([
    query<{ queue: string; state: JobState; n: string }>(db, QUEUE_COUNTS, [queues], "jobwire_queue_counts"),
    query<{ queue: string; age_ms: string }>(db, OLDEST_AVAILABLE, [queues], "jobwire_oldest_available"),
    query<{ name: string }>(db, PAUSED, [queues], "jobwire_paused_queues"),
  ]);
  const byQueue = new Map<string, QueueStats>();
  const entry = (queue: string) => {
    let s = byQueue.get(queue);
    if (!s) {
      s = { queue, counts: Object.fromEntries(JOB_STATES.map((st) => [st, 0])) as Record<JobState, number>, oldestAvailableAgeMs: 0, paused: false };
      byQueue.set(queue, s);
    }
    return s;
  };
  for (const r of counts.rows) entry(r.queue).counts[r.state] = Number(r.n);
  for (const r of oldest.rows) entry(r.queue).oldestAvailableAgeMs = Math.max(0, Math.round(Number(r.age_ms)));
  // A paused queue shows even when it holds no jobs.
  for (const r of paused.rows) entry(r.name).paused = true;
  return [...byQueue.values()].sort((a, b) => a.queue.localeCompare(b.queue));
}

export interface MetricsSnapshot {
  counts: { queue: string; state: string; n: number }[];
  oldest: { queue: string; seconds: number }[];
}

export async function metricsSnapshot(db: Queryable): Promise<MetricsSnapshot> {
  const [counts, oldest] = await Promise.all([
    query<{ queue: string; state: string; n: number }>(db, METRIC_COUNTS, [], "jobwire_metric_counts"),
    query<{ queue: string; age_ms: string }>(db, OLDEST_AVAILABLE, [[]], "jobwire_oldest_available"),
  ]);
  return {
    counts: counts.rows,
    oldest: oldest.rows.map((r) => ({ queue: r.queue, seconds: Math.max(0, Number(r.age_ms) / 1000) })),
  };
}

const QUEUE_FLAGS = "SELECT name AS queue, paused FROM jobwire.queues";

/** Every configured queue, and whether it is paused. */
export async function queueFlags(db: Queryable): Promise<{ queue: string; paused: boolean }[]> {
  const { rows } = await query<{ queue: string; paused: boolean }>(db, QUEUE_FLAGS, [], "jobwire_queue_flags");
  return rows;
}
