import type { Logger } from "../log.js";

/**
 * How long to sleep until something due `msUntil` from now (null: nothing
 * waiting), never longer than `maxMs`, and at least 1 ms so a clock a little
 * behind the database's cannot spin the loop.
 */
export function sleepUntilDue(msUntil: number | null, maxMs: number): number {
  if (msUntil === null) return maxMs;
  return Math.max(1, Math.min(maxMs, Math.ceil(msUntil) + 1));
}

/**
 * A maintenance loop: calls runOnce() on a timer until stopped. runOnce
 * returns how long to wait before the next run (so a loop that found a full
 * batch can go again at once). Tests call runOnce() directly instead.
 */
export abstract class Loop {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private stopped = true;

  protected constructor(
    protected readonly name: string,
    protected readonly log: Logger,
  ) {}

  /** Does one pass; returns the ms to wait before the next. */
  abstract runOnce(): Promise<number>;

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Brings the next pass forward to at most `ms` from now. */
  poke(ms = 0): void {
    if (this.stopped || this.running) {
      if (this.running) this.pokedDuringRun = Math.min(this.pokedDuringRun, ms);
      return;
    }
    if (this.timer && this.dueAt <= Date.now() + ms) return;
    this.schedule(ms);
  }

  private dueAt = 0;
  private pokedDuringRun = Infinity;

  private schedule(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.dueAt = Date.now() + ms;
    this.timer = setTimeout(() => void this.tick(), Math.max(0, ms));
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    this.timer = null;
    this.pokedDuringRun = Infinity;
    let next: number;
    this.running = this.runOnce();
    try {
      next = (await this.running) as number;
    } catch (err) {
      this.log.warn(`${this.name} failed; retrying`, { err });
      next = 1000;
    } finally {
      this.running = null;
    }
    if (!this.stopped) this.schedule(Math.min(next, this.pokedDuringRun));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => {});
  }
}
