import type { Logger } from "../log.js";
import type { QueueSample } from "../model.js";
import type { JobStore } from "../store/jobs.js";
import { Loop } from "./loop.js";

export interface SamplerConfig {
  /** The time between two samples. */
  intervalMs: number;
  /** Samples kept per queue. */
  keep: number;
}

/** A sample every 10 s, 360 of them: the last hour. */
export const DEFAULT_SAMPLE_INTERVAL_MS = 10_000;
export const DEFAULT_SAMPLES_KEPT = 360;

/**
 * Samples every queue's backlog and its cluster-wide counts (enqueued,
 * completed, failed: store/sql/counters.ts) on a timer, into a ring buffer
 * per queue, for the dashboard's charts (AdminService.GetQueueHistory).
 * Every replica samples the same database, so any replica's history tells
 * the same story; each keeps only what it sampled since it started.
 * Memory: 360 samples of 9 numbers per queue, about 30 KB a queue.
 */
export class Sampler extends Loop {
  private readonly rings = new Map<string, QueueSample[]>();
  private last = new Map<string, { enqueued: number; completed: number; failed: number }>();
  private primed = false;

  constructor(
    private readonly store: JobStore,
    readonly cfg: SamplerConfig,
    log: Logger,
  ) {
    super("sampler", log);
  }

  async runOnce(): Promise<number> {
    const [snap, counters] = await Promise.all([this.store.metricsSnapshot(), this.store.readCounters()]);
    const at = new Date();
    const now = new Map<string, { enqueued: number; completed: number; failed: number }>();
    for (const c of counters) {
      const e = now.get(c.queue) ?? { enqueued: 0, completed: 0, failed: 0 };
      e[c.kind] = c.total;
      now.set(c.queue, e);
    }
    const backlog = new Map<string, { available: number; waiting: number; running: number; dead: number }>();
    for (const r of snap.counts) {
      const b = backlog.get(r.queue) ?? { available: 0, waiting: 0, running: 0, dead: 0 };
      if (r.state === "available") b.available += r.n;
      else if (r.state === "scheduled" || r.state === "retryable") b.waiting += r.n;
      else if (r.state === "running") b.running += r.n;
      else if (r.state === "dead") b.dead += r.n;
      backlog.set(r.queue, b);
    }
    // The first pass only sets the baseline the next one's counts are measured from.
    if (this.primed) {
      for (const queue of new Set([...now.keys(), ...backlog.keys(), ...this.rings.keys()])) {
        const c = now.get(queue) ?? { enqueued: 0, completed: 0, failed: 0 };
        const p = this.last.get(queue) ?? { enqueued: 0, completed: 0, failed: 0 };
        const b = backlog.get(queue) ?? { available: 0, waiting: 0, running: 0, dead: 0 };
        const ring = this.rings.get(queue) ?? [];
        ring.push({
          at,
          queue,
          ...b,
          enqueued: Math.max(0, c.enqueued - p.enqueued),
          completed: Math.max(0, c.completed - p.completed),
          failed: Math.max(0, c.failed - p.failed),
        });
        if (ring.length > this.cfg.keep) ring.splice(0, ring.length - this.cfg.keep);
        this.rings.set(queue, ring);
      }
    }
    this.primed = true;
    this.last = now;
    return this.cfg.intervalMs;
  }

  /** Oldest first; one queue, or every queue. */
  samples(queue: string | null): QueueSample[] {
    if (queue !== null) return [...(this.rings.get(queue) ?? [])];
    return [...this.rings.values()].flat().sort((a, b) => a.at.getTime() - b.at.getTime() || a.queue.localeCompare(b.queue));
  }
}
