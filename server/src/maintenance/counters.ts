import type { Logger } from "../log.js";
import type { JobStore } from "../store/jobs.js";
import { Loop } from "./loop.js";

export interface CountersConfig {
  intervalMs: number;
  /** Most deltas folded per statement; a full batch runs the next at once. */
  batch: number;
}

export const DEFAULT_COUNTERS_INTERVAL_MS = 5000;
export const DEFAULT_COUNTERS_BATCH = 10_000;

/**
 * Folds the per-statement count deltas (enqueued, completed, failed per
 * queue) into their totals, so reading a count stays cheap however long
 * the broker runs. At 10,000 enqueue statements a second (single-job
 * calls, coalesced or not) that is 50,000 rows per pass; batches of 10,000
 * keep each fold's lock and WAL small. Several replicas fold side by side
 * (SKIP LOCKED).
 */
export class Counters extends Loop {
  constructor(
    private readonly store: JobStore,
    private readonly cfg: CountersConfig,
    log: Logger,
  ) {
    super("counters", log);
  }

  async runOnce(): Promise<number> {
    const n = await this.store.foldCounters(this.cfg.batch);
    return n === this.cfg.batch ? 0 : this.cfg.intervalMs;
  }
}
