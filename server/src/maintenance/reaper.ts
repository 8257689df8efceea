import { BrokerError } from "../errors.js";
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
 *
 * One bad row cannot stop it. The batch is one statement, so a row that
 * makes it fail (a retry policy whose backoff overflowed, once) would fail
 * every pass on every replica, and no expired lease on any queue would come
 * back. When the batch fails for any reason but the database being down,
 * the reaper takes the expired leases one at a time, and dead-letters a row
 * that still fails, with the error in its history: an operator can fix the
 * cause and replay it.
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
    let reaped: FailedJob[];
    try {
      reaped = await this.store.reapExpired(this.cfg.batch);
    } catch (err) {
      if (unavailable(err)) throw err;
      this.log.warn("reaper batch failed; reaping one lease at a time", { err });
      reaped = await this.oneByOne();
    }
    if (reaped.length > 0) {
      this.log.info("reaped expired leases", { count: reaped.length });
      this.onReaped(reaped);
    }
    // A full batch means there may be more: go again at once.
    return reaped.length === this.cfg.batch ? 0 : this.cfg.intervalMs;
  }

  private async oneByOne(): Promise<FailedJob[]> {
    const out: FailedJob[] = [];
    for (const id of await this.store.expiredIds(this.cfg.batch)) {
      try {
        const f = await this.store.reapOne(id);
        if (f) out.push(f);
      } catch (err) {
        if (unavailable(err)) throw err;
        const reason = `lease expired, and its next attempt could not be scheduled (${(err as Error).message}); dead-lettered so that other leases can be reclaimed`;
        const dead = await this.store.quarantine(id, reason, null);
        this.log.error("dead-lettered a job the reaper could not reclaim", { jobId: id, err });
        if (dead) out.push(dead);
      }
    }
    return out;
  }
}

function unavailable(err: unknown): boolean {
  return err instanceof BrokerError && err.kind === "unavailable";
}
