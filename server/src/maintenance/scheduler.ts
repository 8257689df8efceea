import type { Logger } from "../log.js";
import type { JobStore } from "../store/jobs.js";
import { Loop, sleepUntilDue } from "./loop.js";

export interface SchedulerConfig {
  /** Longest sleep between checks; the loop wakes sooner for the next due job. */
  intervalMs: number;
  /** Most jobs promoted per statement. */
  batch: number;
}

/**
 * Promotes scheduled and retryable jobs to available when their run_at
 * comes, and wakes their queues (the promote statement sends the NOTIFY).
 * It sleeps until the earliest run_at it knows of, capped at intervalMs;
 * a newly scheduled job pokes it (locally, or through NOTIFY "s:").
 */
export class Scheduler extends Loop {
  constructor(
    private readonly store: JobStore,
    private readonly cfg: SchedulerConfig,
    log: Logger,
  ) {
    super("scheduler", log);
  }

  async runOnce(): Promise<number> {
    const promoted = await this.store.promoteDue(this.cfg.batch);
    let total = 0;
    for (const n of promoted.values()) total += n;
    if (total === this.cfg.batch) return 0;
    // Measured on the database's clock, which is the one run_at is kept in.
    return sleepUntilDue(await this.store.msUntilNextDue(), this.cfg.intervalMs);
  }

  /** A job is due in `ms`: make sure we wake by then. */
  dueIn(ms: number): void {
    this.poke(Math.max(0, Math.ceil(ms) + 1));
  }
}
