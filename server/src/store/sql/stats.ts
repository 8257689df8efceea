import type { JobState, QueueStats } from "../../model.js";
import { JOB_STATES } from "../../model.js";
import { query, type Queryable } from "../db.js";

/** Counts per queue and state, for GetQueueStats, /metrics and the dashboard. */

const QUEUE_COUNTS = `
SELECT queue, state, count(*)::bigint AS n FROM jobwire.jobs
WHERE cardinality($1::text[]) = 0 OR queue = ANY($1::text[])
GROUP BY queue, state`;

const OLDEST_AVAILABLE = `
SELECT queue, extract(epoch FROM now() - min(run_at)) * 1000 AS age_ms FROM jobwire.jobs
WHERE state = 'available' AND (cardinality($1::text[]) = 0 OR queue = ANY($1::text[]))
GROUP BY queue`;

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
SELECT queue, 'available', count(*)::int FROM jobwire.jobs WHERE state = 'available' GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*)::int FROM jobwire.jobs WHERE state = 'running' GROUP BY queue
UNION ALL
SELECT queue, 'dead', count(*)::int FROM jobwire.jobs WHERE state IN ('dead', 'cancelled') AND state = 'dead' GROUP BY queue`;

export async function queueStats(db: Queryable, queues: string[]): Promise<QueueStats[]> {
  const [counts, oldest] = await Promise.all([
    query<{ queue: string; state: JobState; n: string }>(db, QUEUE_COUNTS, [queues], "jobwire_queue_counts"),
    query<{ queue: string; age_ms: string }>(db, OLDEST_AVAILABLE, [queues], "jobwire_oldest_available"),
  ]);
  const byQueue = new Map<string, QueueStats>();
  const entry = (queue: string) => {
    let s = byQueue.get(queue);
    if (!s) {
      s = { queue, counts: Object.fromEntries(JOB_STATES.map((st) => [st, 0])) as Record<JobState, number>, oldestAvailableAgeMs: 0 };
      byQueue.set(queue, s);
    }
    return s;
  };
  for (const r of counts.rows) entry(r.queue).counts[r.state] = Number(r.n);
  for (const r of oldest.rows) entry(r.queue).oldestAvailableAgeMs = Math.max(0, Math.round(Number(r.age_ms)));
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
