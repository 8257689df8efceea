/**
 * Heartbeats: one Heartbeat call extends every lease the worker holds,
 * sent when the earliest lease reaches a third of its duration (and at
 * least every maxHeartbeatMs, so cancellations are seen promptly). A
 * result with cancel_requested aborts that handler's ctx.signal with
 * JobCancelledError; one with lost aborts it with LeaseLostError.
 */
import { ROOT_CONTEXT } from "@opentelemetry/api";
import { backoffDelay } from "./backoff.js";
import { timestampToMs } from "./convert.js";
import { JobCancelledError, LeaseLostError, isTransient, toJobwireError } from "./errors.js";
import { context } from "./tracing.js";
import { type Held, type WorkerCore, abortHeld } from "./worker-state.js";

/** Heartbeat when this share of a lease has passed; leaves two more tries before expiry. */
export const HEARTBEAT_FRACTION = 1 / 3;
/** Floor for the heartbeat interval, whatever the lease length. */
export const MIN_HEARTBEAT_INTERVAL_MS = 50;
/** Floor for a Heartbeat call's deadline, however short the leases. */
export const MIN_HEARTBEAT_RPC_TIMEOUT_MS = 500;
/** Most lease tokens per Heartbeat call; the broker's limit is 10,000. */
const HEARTBEAT_CHUNK = 1000;

export class Heartbeats {
  private timer: NodeJS.Timeout | undefined;
  private at = Infinity;
  private inFlight = false;
  private failures = 0;

  constructor(private readonly core: WorkerCore) {}

  interval(leaseMs: number): number {
    return Math.max(MIN_HEARTBEAT_INTERVAL_MS, Math.min(this.core.s.maxHeartbeatMs, leaseMs * HEARTBEAT_FRACTION));
  }

  /**
   * A job arrived whose first beat is due at `due`: arms the timer if none
   * is armed that early. O(1), where schedule() looks at every held job:
   * called per lease batch, that scan took 36% of a worker's CPU when acks
   * fell behind and it held ~90,000 jobs.
   */
  noteDue(due: number): void {
    if (this.inFlight) return; // schedule() runs when the beat returns
    if (this.timer !== undefined && this.at <= due) return;
    this.arm(due);
  }

  /** Arms the timer for the earliest beat any held job needs. */
  schedule(): void {
    if (this.inFlight) return; // rescheduled when it returns
    let due = Infinity;
    for (const h of this.core.held.values()) if (!h.lost && h.nextBeatAt < due) due = h.nextBeatAt;
    if (due === Infinity) {
      this.clear();
      return;
    }
    if (this.timer !== undefined && this.at <= due) return;
    this.arm(due);
  }

  private arm(due: number): void {
    this.clear();
    this.at = due;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.at = Infinity;
      // One Heartbeat covers every held job: it belongs to no job's trace.
      void context.with(ROOT_CONTEXT, () => this.beat());
    }, Math.max(0, due - Date.now()));
  }

  clear(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.at = Infinity;
  }

  /**
   * Extends every lease held, in as few calls as the broker accepts: one
   * call per HEARTBEAT_CHUNK leases (the broker refuses more than 10,000
   * tokens per call, and a worker with deep concurrency can hold more).
   */
  private async beat(): Promise<void> {
    // A finished job's ack is usually answered within milliseconds;
    // heartbeating it meanwhile only makes the two statements wait on each
    // other's row locks (in a burn-down, thousands of rows per second). Its
    // lease is kept alive only if the ack has been stuck for a third of the
    // lease, say while the broker is unreachable.
    const now = Date.now();
    const all: Held[] = [];
    for (const h of this.core.held.values()) {
      if (h.lost) continue;
      const stuckAt = h.settledAt + h.leaseMs / 3;
      if (h.settling && now <= stuckAt) {
        // Look again when its ack would count as stuck.
        h.nextBeatAt = Math.max(h.nextBeatAt, stuckAt + 1);
        continue;
      }
      all.push(h);
    }
    if (all.length === 0) {
      // Nothing to send now, but a skipped job may need a beat later.
      this.schedule();
      return;
    }
    this.inFlight = true;
    try {
      for (let i = 0; i < all.length; i += HEARTBEAT_CHUNK) await this.beatChunk(all.slice(i, i + HEARTBEAT_CHUNK));
    } finally {
      this.inFlight = false;
    }
    this.schedule();
  }

  private async beatChunk(batch: Held[]): Promise<void> {
    const { s, held } = this.core;
    const sentAt = Date.now();
    try {
      // A heartbeat answered after the shortest lease ran out is useless:
      // give up sooner and try again.
      const shortest = Math.min(...batch.map((h) => h.leaseMs));
      const res = await this.core.client.workers.heartbeat(
        { leaseTokens: batch.map((h) => h.token) },
        { timeoutMs: Math.max(MIN_HEARTBEAT_RPC_TIMEOUT_MS, Math.min(s.rpcTimeoutMs, shortest / 2)) },
      );
      this.failures = 0;
      res.results.forEach((r, i) => {
        const h = r.leaseToken !== "" ? held.get(r.leaseToken) : batch[i];
        if (h === undefined) return;
        if (r.lost) {
          this.markLost(h);
          return;
        }
        h.expiresAtMs = timestampToMs(r.leaseExpiresAt) ?? h.expiresAtMs;
        h.nextBeatAt = sentAt + this.interval(h.leaseMs);
        if (r.cancelRequested && !h.cancelRequested) {
          h.cancelRequested = true;
          s.log.info(`job ${h.job.id}: cancel requested`);
          abortHeld(h, new JobCancelledError(`job ${h.job.id} was cancelled`));
        }
      });
    } catch (err) {
      const e = toJobwireError(err);
      this.failures++;
      // Try again soon, but well inside the shortest lease.
      const retryIn = Math.min(backoffDelay(this.failures, s.backoff), ...batch.map((h) => h.leaseMs / 6));
      const level = isTransient(e) ? "warn" : "error";
      s.log[level](`heartbeat of ${batch.length} lease(s) failed, retrying in ${Math.round(retryIn)}ms: ${e.message}`);
      for (const h of batch) h.nextBeatAt = Date.now() + retryIn;
    }
  }

  private markLost(h: Held): void {
    if (h.lost) return;
    h.lost = true;
    if (h.settling) {
      // A heartbeat that crossed this job's ack: the ack's answer decides.
      this.core.s.log.debug(`job ${h.job.id}: lease gone after the handler finished`);
      return;
    }
    this.core.s.log.warn(`job ${h.job.id}: lease lost`);
    abortHeld(h, new LeaseLostError(`lease on job ${h.job.id} was lost`));
    // Never started: nothing to wait for.
    if (!h.started) this.core.exec.dropWaiting(h);
  }
}
