import { nextFire, parseCron } from "../broker/cron.js";
import type { Logger } from "../log.js";
import type { ScheduleStore } from "../store/schedules.js";
import { Loop, sleepUntilDue } from "./loop.js";

export interface CronConfig {
  /** Longest sleep between checks; the loop wakes sooner for the next fire. */
  intervalMs: number;
  /** Most schedules fired per transaction. */
  batch: number;
}

/**
 * Fires recurring schedules. It only enqueues; the job then runs, retries
 * and dead-letters like any other. Several replicas may run this loop: the
 * due rows are locked SKIP LOCKED, and each fire's job carries the key
 * "cron:<name>:<fire time>", so a fire is enqueued once.
 *
 * A broker that was down past several fire times fires once when it comes
 * back (for the earliest missed time), then resumes at the next time after
 * now: catching up every missed run would flood the queue with stale work.
 */
export class CronLoop extends Loop {
  constructor(
    private readonly store: ScheduleStore,
    private readonly cfg: CronConfig,
    log: Logger,
  ) {
    super("cron", log);
  }

  async runOnce(): Promise<number> {
    const fired = await this.store.fireDue(this.cfg.batch, (cron, firedAt, now) =>
      // biome-ignore lint/complexity/useMathMinMax: Dates; Math.max would turn them into numbers.
      nextFire(parseCron(cron), firedAt > now ? firedAt : now),
    );
    if (fired.length > 0) this.log.info("schedules fired", { count: fired.length });
    if (fired.length === this.cfg.batch) return 0;
    return sleepUntilDue(await this.store.msUntilNext(), this.cfg.intervalMs);
  }
}
