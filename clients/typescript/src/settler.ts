/**
 * Settler reports the end of each attempt to the broker: acks are batched
 * (many tokens per Ack call, flushed within ackFlushMs), nacks go one per
 * call (the RPC takes one token). Both are retried on UNAVAILABLE with
 * jittered backoff for as long as the worker runs, because leases outlive
 * the Lease stream: an ack owed across a broker restart is still accepted
 * as long as the lease has not expired.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import { type BackoffOptions, backoffDelay, settleWithin, sleep } from "./backoff.js";
import { msToDuration } from "./convert.js";
import { isTransient, toJobwireError } from "./errors.js";
import type { Logger } from "./logger.js";
import type { JobwireClient } from "./client.js";
import { ROOT_CONTEXT, context } from "@opentelemetry/api";

/** How an ack or nack ended, as far as the worker can tell. */
export type SettleResult =
  | { kind: "acked" }
  | { kind: "nacked"; state: JobState }
  /** The lease was gone: the broker changed nothing. */
  | { kind: "lost" }
  /** The broker could not be told before the worker gave up. */
  | { kind: "abandoned"; error: unknown };

export interface SettlerOptions {
  client: JobwireClient;
  /** How long acks wait for company before a flush, in ms. */
  ackFlushMs: number;
  /** Most tokens per Ack call. */
  ackMaxBatch: number;
  rpcTimeoutMs: number;
  backoff: BackoffOptions;
  logger: Logger;
  /**
   * Acks on the open Lease stream; returns null when none takes acks, and
   * the Ack call is used instead (worker-lease.ts, ackOnStream).
   */
  streamAck?: (tokens: string[]) => Promise<string[]> | null;
}

interface PendingAck {
  token: string;
  resolve: (r: SettleResult) => void;
}

export interface NackSpec {
  token: string;
  error: string;
  permanent: boolean;
  retryAfterMs?: number;
}

/**
 * Ack calls that may be in flight at once. Acks are idempotent, so order
 * does not matter; one at a time let un-acked jobs pile up behind a slow
 * call when handlers finish faster than an Ack round trip.
 */
export const MAX_ACKS_IN_FLIGHT = 4;

/** The two answers an Ack call gives per job, shared rather than made per job. */
const ACKED: SettleResult = Object.freeze({ kind: "acked" });
const LOST: SettleResult = Object.freeze({ kind: "lost" });

/** Nack messages above this are cut; the broker keeps at most 64 KiB. */
export const MAX_NACK_ERROR_BYTES = 60 * 1024;

export class Settler {
  private readonly opts: SettlerOptions;
  private readonly acks: PendingAck[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  /** Ack calls in flight; up to MAX_ACKS_IN_FLIGHT, so acks keep pace with deep concurrency. */
  private acksInFlight = 0;
  /** Acks taken from the queue by Ack calls not yet answered. */
  private acksSending = 0;
  private nacksSending = 0;
  private ackFailures = 0;
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Aborted when the worker gives up on what it still owes. */
  private readonly giveUp = new AbortController();

  constructor(opts: SettlerOptions) {
    this.opts = opts;
  }

  /** Owed acks and nacks not yet answered. */
  get pending(): number {
    return this.acks.length + this.acksSending + this.nacksSending;
  }

  /**
   * Owes an ack. The promise is not tracked on its own (one more promise
   * and Set entry per job); the Ack call that carries it is.
   */
  ack(token: string): Promise<SettleResult> {
    return new Promise<SettleResult>((resolve) => {
      this.acks.push({ token, resolve });
      this.scheduleFlush(this.acks.length >= this.opts.ackMaxBatch ? 0 : this.opts.ackFlushMs);
    });
  }

  nack(spec: NackSpec): Promise<SettleResult> {
    this.nacksSending++;
    return this.track(this.sendNack(spec).finally(() => this.nacksSending--));
  }

  /**
   * Waits until everything owed is answered, or until `deadline` (epoch ms);
   * then abandons what is left (those leases expire on the broker and the
   * jobs are delivered again). Returns how many were abandoned.
   */
  async flush(deadline: number): Promise<number> {
    this.scheduleFlush(0);
    while (this.pending > 0 && Date.now() < deadline) {
      // Nothing in flight: acks wait for their flush timer (or a retry's
      // backoff), which must get a turn.
      if (this.inFlight.size === 0) await sleep(1);
      else await settleWithin(Promise.allSettled([...this.inFlight]), deadline - Date.now());
    }
    const left = this.pending;
    if (left > 0) {
      this.giveUp.abort();
      const dropped = this.acks.splice(0);
      for (const a of dropped) a.resolve({ kind: "abandoned", error: new Error("worker stopped before the ack was delivered") });
      await settleWithin(Promise.allSettled([...this.inFlight]), 100);
    }
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    return left;
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
    return p;
  }

  private scheduleFlush(ms: number): void {
    if (this.acksInFlight >= MAX_ACKS_IN_FLIGHT) return; // a running flush reschedules when it ends
    if (this.flushTimer !== undefined) {
      if (ms > 0) return;
      clearTimeout(this.flushTimer);
    }
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      // One Ack carries many jobs: send it in no job's trace (the timer
      // would otherwise inherit the context of whichever attempt armed it).
      void this.track(context.with(ROOT_CONTEXT, () => this.flushAcks()));
    }, ms);
  }

  private async flushAcks(): Promise<void> {
    if (this.acksInFlight >= MAX_ACKS_IN_FLIGHT || this.acks.length === 0) return;
    this.acksInFlight++;
    const batch = this.acks.splice(0, this.opts.ackMaxBatch);
    this.acksSending += batch.length;
    // A full batch is still waiting: send it alongside rather than after.
    if (this.acks.length >= this.opts.ackMaxBatch) this.scheduleFlush(0);
    let retryIn = 0;
    try {
      const tokens = batch.map((a) => a.token);
      const onStream = this.opts.streamAck?.(tokens);
      const lostTokens = onStream
        ? await answerWithin(onStream, this.opts.rpcTimeoutMs, this.giveUp.signal)
        : (await this.opts.client.workers.ack({ leaseTokens: tokens }, { timeoutMs: this.opts.rpcTimeoutMs, signal: this.giveUp.signal })).lostLeaseTokens;
      this.ackFailures = 0;
      const lost = new Set(lostTokens);
      if (lost.size === 0) for (const a of batch) a.resolve(ACKED);
      else for (const a of batch) a.resolve(lost.has(a.token) ? LOST : ACKED);
    } catch (err) {
      const e = toJobwireError(err);
      if (this.giveUp.signal.aborted) {
        for (const a of batch) a.resolve({ kind: "abandoned", error: e });
      } else if (isTransient(e) || e.code === Code.DeadlineExceeded) {
        // Put them back in front and try again: acks are idempotent, and an
        // ack the broker already applied answers with the token as lost at
        // worst, never a second completion.
        this.acks.unshift(...batch);
        this.ackFailures++;
        retryIn = backoffDelay(this.ackFailures, this.opts.backoff);
        this.opts.logger.warn(`ack of ${batch.length} job(s) failed, retrying in ${retryIn}ms: ${e.message}`);
      } else {
        this.opts.logger.error(`ack of ${batch.length} job(s) failed: ${e.message}`);
        for (const a of batch) a.resolve({ kind: "abandoned", error: e });
      }
    } finally {
      this.acksInFlight--;
      this.acksSending -= batch.length;
    }
    if (this.acks.length > 0) {
      this.scheduleFlush(retryIn > 0 ? retryIn : this.acks.length >= this.opts.ackMaxBatch ? 0 : this.opts.ackFlushMs);
    }
  }

  private async sendNack(spec: NackSpec): Promise<SettleResult> {
    const error = truncateUtf8(spec.error, MAX_NACK_ERROR_BYTES);
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await this.opts.client.workers.nack(
          {
            leaseToken: spec.token,
            error,
            permanent: spec.permanent,
            ...(spec.retryAfterMs !== undefined ? { retryAfter: msToDuration(spec.retryAfterMs) } : {}),
          },
          { timeoutMs: this.opts.rpcTimeoutMs, signal: this.giveUp.signal },
        );
        return { kind: "nacked", state: res.state };
      } catch (err) {
        const e = toJobwireError(err);
        if (e.code === Code.FailedPrecondition) return LOST;
        if (this.giveUp.signal.aborted) return { kind: "abandoned", error: e };
        if (!isTransient(e) && e.code !== Code.DeadlineExceeded) {
          this.opts.logger.error(`nack failed: ${e.message}`);
          return { kind: "abandoned", error: e };
        }
        const delay = backoffDelay(attempt, this.opts.backoff);
        this.opts.logger.warn(`nack failed, retrying in ${delay}ms: ${e.message}`);
        await sleep(delay, this.giveUp.signal);
      }
    }
  }
}

/** A stream ack's answer, as an Ack call's would come: DEADLINE_EXCEEDED after `ms`, CANCELED when given up. */
function answerWithin<T>(p: Promise<T>, ms: number, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => done(new ConnectError("the ack on the Lease stream was not answered in time", Code.DeadlineExceeded)), ms);
    const onAbort = () => done(new ConnectError("the worker gave up on the ack", Code.Canceled));
    const done = (err: ConnectError | null, v?: T) => {
      clearTimeout(t);
      signal.removeEventListener("abort", onAbort);
      if (err) reject(err);
      else resolve(v as T);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => done(null, v),
      (e: unknown) => done(ConnectError.from(e)),
    );
  });
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Cuts `s` to at most `max` UTF-8 bytes without splitting a character. */
export function truncateUtf8(s: string, max: number): string {
  const bytes = encoder.encode(s);
  if (bytes.length <= max) return s;
  // fatal: false drops a trailing partial character as U+FFFD; strip it.
  return `${decoder.decode(bytes.subarray(0, max)).replace(/\uFFFD$/, "")}…`;
}
