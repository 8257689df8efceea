import type { Logger } from "../log.js";
import type { JobStore } from "../store/jobs.js";
import { Loop } from "./loop.js";

export interface PrunerConfig {
  /** How often to look for completed jobs past their retention. */
  intervalMs: number;
  /** Most jobs deleted per statement. */
  batch: number;
}

/**
 * The pruner deletes completed jobs once their retention has passed (each
 * job's prune_at, fixed at its ack: see migrations/005_retention.sql), so
 * the history stays bounded. Dead and cancelled jobs are left for
 * operators. Safe with several replicas: rows are taken SKIP LOCKED.
 */
export class Pruner extends Loop {
  constructor(
    private readonly store: JobStore,
    private readonly cfg: PrunerConfig,
    log: Logger,
    private readonly onPruned: (count: number) => void = () => {},
  ) {
    super("pruner", log);
  }

  async runOnce(): Promise<number> {
    const n = await this.store.pruneCompleted(this.cfg.batch);
    if (n > 0) {
      this.log.debug("pruned completed jobs", { count: n });
      this.onPruned(n);
    }
    // A full batch means there may be more: go again at once.
    return n === this.cfg.batch ? 0 : this.cfg.intervalMs;
  }
}
