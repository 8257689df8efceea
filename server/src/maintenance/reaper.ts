import type { Logger } from "../log.js";
import type { FailedJob } from "../model.js";
import type { JobStore } from "../store/jobs.js";
import { Loop } from "./loop.js";

export interface ReaperConfig {
  /** How often to look for expired leases. */
  intervalMs: number;
  /** Most leases reclaimed per statement. */
  batch: number;
}

/**
 * The reaper returns expired leases: each such job fails its attempt with
 * "lease expired" and goes to retryable (or dead once out of attempts, or
 * cancelled if a cancel was pending). Crashed and wedged workers cost a
 * lease's length, never a job. Safe with several replicas: the claim of
 * expired rows is SKIP LOCKED, so each row is reaped once.
 */
export class Reaper extends Loop {
  constructor(
    private readonly store: JobStore,
    private readonly cfg: ReaperConfig,
    log: Logger,
    private readonly onReaped: (jobs: FailedJob[]) => void,
  ) {
    super("reaper", log);
  }

  async runOnce(): Promise<number> {
    const reaped = await this.store.reapExpired(this.cfg.batch);
    if (reaped.length > 0) {
      this.log.info("reaped expired leases", { count: reaped.length });
      this.onReaped(reaped);
    }
    // A full batch means there may be more: go again at once.
    return reaped.length === this.cfg.batch ? 0 : this.cfg.intervalMs;
  }
}
