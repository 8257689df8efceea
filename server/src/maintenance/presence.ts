import type { Logger } from "../log.js";
import type { WorkerStream } from "../model.js";
import type { JobStore } from "../store/jobs.js";
import { Loop } from "./loop.js";

export interface PresenceConfig {
  /** How often this replica reports its streams. */
  intervalMs: number;
  /** A replica not heard from for this long is gone (its row is deleted). */
  staleMs: number;
}

/** Every 5 s: ListWorkers is at most that old for other replicas (this one's own streams are read live). */
export const DEFAULT_PRESENCE_INTERVAL_MS = 5000;
export const DEFAULT_PRESENCE_STALE_MS = 60_000;

/**
 * The presence loop: writes this replica's open Lease streams to
 * jobwire.brokers, so that ListWorkers on any replica, and the
 * workers-per-queue gauge, see every replica's workers. Deletes the rows of
 * replicas that stopped reporting.
 */
export class Presence extends Loop {
  readonly startedAt = new Date();

  constructor(
    private readonly store: JobStore,
    readonly brokerId: string,
    private readonly streams: () => WorkerStream[],
    private readonly cfg: PresenceConfig,
    log: Logger,
  ) {
    super("presence", log);
  }

  async runOnce(): Promise<number> {
    await this.store.heartbeatBroker(this.brokerId, this.startedAt, this.streams());
    await this.store.pruneBrokers(this.cfg.staleMs);
    return this.cfg.intervalMs;
  }

  /** On shutdown: this replica's streams are gone at once, not a minute later. */
  async leave(): Promise<void> {
    await this.stop();
    await this.store.leaveBrokers(this.brokerId).catch((err) => this.log.debug("presence: could not leave", { err }));
  }
}
