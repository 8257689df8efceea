import { BrokerError } from "../errors.js";
import type { Logger } from "../log.js";
import type { ClaimedJob, Lease, WorkerStream } from "../model.js";
import type { JobStore } from "../store/jobs.js";
import { encodeToken } from "./token.js";
import type { LeaseOpenInput } from "./validate.js";

export interface DispatcherConfig {
  /** Most jobs one claim statement takes for one stream. */
  claimBatch: number;
  defaultLeaseMs: number;
  /**
   * Idle streams look for work this often even if no NOTIFY comes (the
   * polling fallback): one idle stream per queue, not every stream.
   */
  pollIntervalMs: number;
  keepaliveMs: number;
}

/**
 * What a lease stream yields: a batch of leases, or an empty batch as a
 * keepalive.
 */
export type LeaseBatch = Lease[];

/**
 * The Dispatcher hands available jobs to open Lease streams.
 *
 * Each stream pulls: while it has credit it claims up to min(credit,
 * claimBatch) jobs in one statement. When a claim comes back short, the
 * queue was drained at that snapshot, so the stream sleeps until a NOTIFY
 * for one of its queues (or the poll fallback). Wake-ups that arrive while a
 * claim is in flight are counted, not lost: the stream claims once more
 * instead of sleeping. Many NOTIFYs during one claim collapse into one
 * extra claim, which is the debounce.
 *
 * A NOTIFY wakes one idle stream, not all: the others would claim the same
 * job and find nothing (at 500 jobs/s with two workers, 1.56 claims per job
 * instead of one). Streams in the middle of a claim, or without credit,
 * still count the wake-up as before, so none misses work. When a woken
 * stream's claim comes back full there may be more, and it wakes the next
 * idle stream on its queues: a burst spreads over the streams in a chain.
 *
 * The polling fallback is the same wake-up on a timer: every poll interval,
 * one idle stream per queue looks, as if a NOTIFY had come. Each idle
 * stream polling on its own cost a claim per stream per interval: 1,000
 * idle streams made about 1,000 empty claims a second, 42-45% of a core in
 * Postgres, while nothing happened.
 */
export class Dispatcher {
  private readonly sessions = new Set<LeaseSession>();
  private readonly byQueue = new Map<string, Set<LeaseSession>>();
  private draining = false;
  private poller: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: JobStore,
    private readonly cfg: DispatcherConfig,
    private readonly log: Logger,
    /** Called with each batch handed out, for metrics and traces. */
    private readonly onLeased: (leases: Lease[]) => void = () => {},
  ) {}

  open(o: LeaseOpenInput): LeaseSession {
    if (this.draining) throw new BrokerError("unavailable", "the broker is shutting down; reconnect to another replica");
    const s = new LeaseSession(o, this.store, this.cfg, this.log, this.onLeased, () => this.remove(s), () => this.wakeNextIdle(s));
    this.sessions.add(s);
    for (const q of o.queues) {
      let set = this.byQueue.get(q);
      if (!set) {
        set = new Set();
        this.byQueue.set(q, set);
      }
      set.add(s);
    }
    s.start();
    this.poller ??= setInterval(() => this.poll(), this.cfg.pollIntervalMs).unref();
    return s;
  }

  /** The polling fallback: one idle stream per queue looks for work. */
  private poll(): void {
    for (const set of this.byQueue.values()) {
      for (const s of set) {
        if (s.idle) {
          this.wakeIdle(set, s);
          break;
        }
      }
    }
  }

  /** Jobs became available on a queue (NOTIFY, or a local change): wakes one idle stream (see above). */
  wakeQueue(queue: string): void {
    const set = this.byQueue.get(queue);
    if (!set) return;
    let chosen: LeaseSession | undefined;
    for (const s of set) {
      if (s.idle) chosen ??= s;
      else s.wake();
    }
    if (chosen) this.wakeIdle(set, chosen);
  }

  /** After a full claim by `from`: one more idle stream on its queues, if any, looks too. */
  private wakeNextIdle(from: LeaseSession): void {
    for (const q of from.queues) {
      const set = this.byQueue.get(q);
      if (!set) continue;
      for (const s of set) {
        if (s !== from && s.idle) {
          this.wakeIdle(set, s);
          return;
        }
      }
    }
  }

  /** Wakes s and moves it to the back of its queue's set, so the next wake-up picks another stream first. */
  private wakeIdle(set: Set<LeaseSession>, s: LeaseSession): void {
    set.delete(s);
    set.add(s);
    s.wake();
  }

  wakeAll(): void {
    for (const s of this.sessions) s.wake();
  }

  get openStreams(): number {
    return this.sessions.size;
  }

  /** This replica's open streams, for ListWorkers and the presence loop. */
  streams(brokerId: string): WorkerStream[] {
    return [...this.sessions].map((s) => s.describe(brokerId));
  }

  /** Streams on `queue` asleep with credit after finding it empty. */
  idleStreamsOn(queue: string): number {
    let n = 0;
    for (const s of this.byQueue.get(queue) ?? []) if (s.idle) n++;
    return n;
  }

  /** Stops handing out leases and ends every stream with UNAVAILABLE. */
  async drain(): Promise<void> {
    this.draining = true;
    if (this.poller) clearInterval(this.poller);
    this.poller = null;
    await Promise.all([...this.sessions].map((s) => s.close(new BrokerError("unavailable", "the broker is shutting down; reconnect"))));
  }

  private remove(s: LeaseSession): void {
    this.sessions.delete(s);
    for (const q of s.queues) {
      const set = this.byQueue.get(q);
      set?.delete(s);
      if (set?.size === 0) this.byQueue.delete(q);
    }
  }
}

export class LeaseSession implements AsyncIterable<LeaseBatch> {
  readonly queues: string[];
  private credit: number;
  private readonly maxCredit: number;
  private wakeSeq = 0;
  /** wakeSeq when the last claim began. */
  private claimSeq = -1;
  /** The last claim came back short: its queues were empty at that snapshot. */
  private drained = false;
  private wakeResolve: (() => void) | null = null;
  /** Claimed but not yet taken by the transport; released if the stream ends first. */
  private outbox: ClaimedJob[][] = [];
  private outboxResolve: (() => void) | null = null;
  private ended = false;
  private error: BrokerError | null = null;
  private pump: Promise<void> = Promise.resolve();
  /**
   * When the last message went out; 0 until the first, so that a stream
   * whose queues are empty gets an empty message at once: the worker then
   * knows its stream is open, rather than waiting for the first keepalive
   * (15 s by default).
   */
  private lastSent = 0;
  private readonly connectedAt = new Date();

  constructor(
    private readonly open: LeaseOpenInput,
    private readonly store: JobStore,
    private readonly cfg: DispatcherConfig,
    private readonly log: Logger,
    private readonly onLeased: (leases: Lease[]) => void,
    private readonly onEnd: () => void,
    /** The last claim came back full: there may be more for another stream. */
    private readonly onFullClaim: () => void = () => {},
  ) {
    this.queues = open.queues;
    this.credit = open.maxInFlight;
    this.maxCredit = open.maxInFlight;
  }

  start(): void {
    this.pump = this.run().catch((err) => {
      this.log.error("lease stream failed", { err, worker: this.open.workerId });
      void this.close(new BrokerError("unavailable", "lease stream failed; reconnect", undefined, { cause: err }));
    });
  }

  /**
   * The worker freed `n` slots. Outstanding credit never exceeds
   * max_in_flight. The new credit is used at once only if work may be
   * waiting: the last claim was cut short by credit rather than by an empty
   * queue, or a wake-up came since it began. Otherwise the next NOTIFY (or
   * the poll) brings the stream back. Claiming on every returned credit cost
   * an empty claim per job at low rates (8,635 claims for 5,000 jobs at 500
   * jobs/s), and the broker's share of each statement is mostly a syscall.
   */
  addCredit(n: number): void {
    this.credit = Math.min(this.maxCredit, this.credit + n);
    if (!this.drained || this.wakeSeq !== this.claimSeq) this.kick();
  }

  describe(brokerId: string): WorkerStream {
    let unsent = 0;
    for (const b of this.outbox) unsent += b.length;
    return {
      brokerId,
      workerId: this.open.workerId,
      queues: this.queues,
      maxInFlight: this.maxCredit,
      credit: this.credit,
      held: this.maxCredit - this.credit - unsent,
      connectedAt: this.connectedAt,
      peer: this.open.peer ?? "",
    };
  }

  /** Asleep after finding its queues empty, with credit to take work: a wake-up would start a claim. */
  get idle(): boolean {
    return this.wakeResolve !== null && this.drained && this.credit > 0 && !this.ended;
  }

  /** Work may be available (NOTIFY, or a local change). */
  wake(): void {
    this.wakeSeq++;
    this.kick();
  }

  /** Ends the current sleep, if any. */
  private kick(): void {
    const r = this.wakeResolve;
    this.wakeResolve = null;
    r?.();
  }

  /** Sleeps until wake(), addCredit() or close(); or `ms` has passed, when given. */
  private sleep(ms?: number): Promise<void> {
    return new Promise((resolve) => {
      const t = ms === undefined ? undefined : setTimeout(() => {
        this.wakeResolve = null;
        resolve();
      }, ms);
      this.wakeResolve = () => {
        if (t !== undefined) clearTimeout(t);
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.ended) {
      if (this.credit <= 0) {
        await this.sleep(); // addCredit() wakes it
        continue;
      }
      const seen = this.wakeSeq;
      this.claimSeq = seen;
      const want = Math.min(this.credit, this.cfg.claimBatch);
      let got: ClaimedJob[];
      let retryAt: Date | null;
      try {
        ({ jobs: got, retryAt } = await this.store.claim(this.queues, want, this.open.workerId, this.open.leaseMs, this.cfg.defaultLeaseMs));
        failures = 0;
      } catch (err) {
        // The database is down or restarting: back off, keep the stream.
        failures++;
        this.log.warn("claim failed", { err, worker: this.open.workerId });
        await this.sleep(Math.min(100 * 2 ** failures, 5000));
        continue;
      }
      if (this.ended) {
        await this.releaseClaimed(got);
        return;
      }
      this.drained = got.length < want;
      if (!this.drained) this.onFullClaim();
      if (got.length > 0) {
        this.credit -= got.length;
        this.outbox.push(got);
        this.outboxResolve?.();
        this.outboxResolve = null;
      }
      // Drained: NOTIFY, or the dispatcher's poll, wakes it; or a rate
      // limit's next start, which nothing announces.
      if (got.length < want && this.wakeSeq === seen) {
        await this.sleep(retryAt === null ? undefined : Math.min(this.cfg.pollIntervalMs, Math.max(1, retryAt.getTime() - Date.now())));
      }
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<LeaseBatch> {
    try {
      for (;;) {
        if (this.ended) break;
        const next = this.outbox.shift();
        if (next) {
          const leases = next.map(
            (c): Lease => ({ job: c.job, token: encodeToken(c.job.id, c.token), expiresAt: c.expiresAt }),
          );
          this.lastSent = Date.now();
          this.onLeased(leases);
          yield leases;
          continue;
        }
        const idle = this.cfg.keepaliveMs - (Date.now() - this.lastSent);
        if (idle <= 0) {
          this.lastSent = Date.now();
          yield [];
          continue;
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, idle);
          this.outboxResolve = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      if (this.error) throw this.error;
    } finally {
      await this.close(null);
    }
  }

  /**
   * Ends the stream: no more claims, and any leases claimed but not yet
   * handed to the transport go back to available. Leases already sent stay
   * with the worker, which can still ack them from any connection.
   */
  async close(error: BrokerError | null): Promise<void> {
    if (error && !this.error && !this.ended) this.error = error;
    if (this.ended) return;
    this.ended = true;
    this.wake();
    this.outboxResolve?.();
    this.outboxResolve = null;
    this.onEnd();
    await this.pump;
    const unsent = this.outbox.flat();
    this.outbox = [];
    await this.releaseClaimed(unsent);
  }

  private async releaseClaimed(jobs: ClaimedJob[]): Promise<void> {
    if (jobs.length === 0) return;
    try {
      const queues = await this.store.release(jobs.map((c) => ({ id: c.job.id, token: c.token })));
      await Promise.all(queues.map((q) => this.store.notify(q)));
    } catch (err) {
      // They stay leased and the reaper returns them when the lease expires.
      this.log.warn("could not release undelivered leases", { err, count: jobs.length });
    }
  }
}
