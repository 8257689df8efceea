/**
 * Running handlers: at most `concurrency` at once, each in its CONSUMER
 * span, then reporting how the attempt ended (an ack through the Settler's
 * batches, or a nack, permanent for PermanentError) and recording the
 * outcome on the span. The slot frees when the handler returns, not when
 * the broker answers: the ack is owed, retried across broker failures, and
 * flushed before run() ends.
 */
import { JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import type { Context, Span } from "@opentelemetry/api";
import { LeaseLostError, PermanentError, WorkerShutdownError } from "./errors.js";
import type { JobInfo } from "./model.js";
import { decodePayload } from "./payload.js";
import type { SettleResult } from "./settler.js";
import { OFF_SPAN, type Outcome, context, endConsumerSpan, errorMessage, startConsumerSpan } from "./tracing.js";
import type { JobContext, WorkerJob } from "./worker.js";
import { type Held, type WorkerCore, abortHeld, abortReasonOf, infoOf, signalOf } from "./worker-state.js";

export class Executor {
  /** Leased jobs waiting for a free slot (only after a reconnect, see LeaseLoop.accept). */
  readonly waiting: Held[] = [];
  /** Handlers running now. */
  running = 0;
  readonly handlerDone = new Map<Held, Promise<void>>();
  /** Attempts whose result is being reported (ack or nack owed, span open). */
  readonly reporting = new Map<Held, Promise<void>>();

  constructor(private readonly core: WorkerCore) {}

  /** Starts a job now if a slot is free, else queues it for the next free slot. */
  admit(h: Held): void {
    if (this.running < this.core.s.concurrency) this.start(h);
    else this.waiting.push(h);
  }

  /** Forgets a job that never started (its lease was lost, or the worker stops); its credit goes back. */
  dropWaiting(h: Held): void {
    const i = this.waiting.indexOf(h);
    if (i >= 0) this.waiting.splice(i, 1);
    this.core.held.delete(h.token);
    this.core.lease.returnCredit(h.streamGen);
  }

  private start(h: Held): void {
    h.started = true;
    this.running++;
    const p = this.execute(h);
    if (!h.handlerEnded) this.handlerDone.set(h, p);
  }

  private slotFreed(h: Held): void {
    this.running--;
    this.core.lease.returnCredit(h.streamGen);
    const next = this.waiting.shift();
    if (next !== undefined) this.start(next);
  }

  /**
   * Runs one attempt in its CONSUMER span, then starts reporting it (an ack
   * or a nack) and frees the slot. Never rejects. One async function per
   * job rather than a chain of .catch()/.finally() promises: at thousands of
   * jobs a second, every promise shows in the worker's CPU profile.
   */
  private async execute(h: Held): Promise<void> {
    const { s } = this.core;
    const job = h.job;
    try {
      // Inert OpenTelemetry: the handler gets the non-recording span, and
      // there is no context to enter (with() would only call through).
      let span = OFF_SPAN;
      let spanCtx: Context | undefined;
      if (!h.inert) {
        ({ span, ctx: spanCtx } = startConsumerSpan({
          queue: job.queue,
          type: job.type,
          jobId: job.id,
          attempt: job.attempt,
          workerId: s.workerId,
          headers: job.headers,
        }));
      }
      if (s.hasEvents) s.onEvent({ type: "job_started", jobId: job.id, attempt: job.attempt });
      let failure: unknown;
      let ok = false;
      try {
        if (spanCtx === undefined) await this.invoke(h, span);
        else await context.with(spanCtx, () => this.invoke(h, span));
        ok = true;
      } catch (err) {
        failure = err ?? new Error("handler threw a nullish value");
      }
      // The handler's promise has settled, so its slot is free from here on;
      // what follows only reports the result.
      h.settling = true;
      h.settledAt = Date.now();
      // Nacks go out in the attempt's context, so a tracing broker links them.
      const r =
        spanCtx === undefined ? this.report(h, span, ok, failure) : context.with(spanCtx, () => this.report(h, span, ok, failure));
      if (!h.reportEnded) this.reporting.set(h, r);
    } catch (err) {
      s.log.error(`job ${job.id}: internal error: ${errorMessage(err)}`);
    } finally {
      h.handlerEnded = true;
      this.handlerDone.delete(h);
      this.slotFreed(h);
    }
  }

  private async invoke(h: Held, span: Span): Promise<void> {
    const { handlers, workerId } = this.core.s;
    const job = h.job;
    const handler = Object.hasOwn(handlers, job.type) ? handlers[job.type] : undefined;
    if (handler === undefined) {
      const known = Object.keys(handlers).sort().join(", ");
      throw new PermanentError(`no handler for job type "${job.type}" on worker ${workerId} (it handles: ${known})`);
    }
    let payload: unknown;
    try {
      payload = decodePayload(job.payload, job.contentType);
    } catch (err) {
      throw new PermanentError(`payload is not valid ${job.contentType || "JSON"}: ${errorMessage(err)}`, { cause: err });
    }
    await handler(new HandlerJob(h, payload), new HandlerContext(h, workerId, span));
  }

  /**
   * Acks or nacks one attempt and ends its span. A handler that returned is
   * acked even when CancelJob was called meanwhile: it has done its work
   * (the cancel_then_return scenario), and the broker completes the job.
   * Never rejects.
   */
  private async report(h: Held, span: Span, ok: boolean, failure: unknown): Promise<void> {
    const { s, settler, held } = this.core;
    try {
      let outcome: Outcome;
      try {
        if (h.lost) {
          outcome = "lease_lost";
          s.log.warn(`job ${h.job.id}: the lease was lost while the handler ran; its result is discarded`);
        } else if (ok) {
          outcome = outcomeOf(await settler.ack(h.token), "completed");
        } else {
          const permanent = isPermanent(failure);
          const shutdown = abortReasonOf(h) instanceof WorkerShutdownError;
          const r = await settler.nack({
            token: h.token,
            error: errorMessage(failure),
            permanent,
            // Aborted by our own shutdown: let another worker pick it up now.
            ...(shutdown && !permanent ? { retryAfterMs: 0 } : {}),
          });
          outcome = outcomeOf(r, h.cancelRequested ? "cancelled" : permanent ? "dead" : "retry");
        }
      } finally {
        held.delete(h.token);
        this.core.lease.settled();
      }
      if (span !== OFF_SPAN) endConsumerSpan(span, outcome, ok ? undefined : failure);
      if (s.hasEvents) s.onEvent({ type: "job_finished", jobId: h.job.id, attempt: h.job.attempt, outcome });
      if (outcome === "lease_lost") abortHeld(h, new LeaseLostError(`lease on job ${h.job.id} was lost`));
    } catch (err) {
      s.log.error(`job ${h.job.id}: reporting the result failed: ${errorMessage(err)}`);
    } finally {
      h.reportEnded = true;
      this.reporting.delete(h);
    }
  }
}

/** The outcome for the span (tracing.ts lists them): the broker's answer where it gave one. */
export function outcomeOf(r: SettleResult, expected: Outcome): Outcome {
  switch (r.kind) {
    case "acked":
      return "completed";
    case "lost":
      return "lease_lost";
    case "abandoned":
      return "report_failed";
    case "nacked":
      if (r.state === JobState.CANCELLED) return "cancelled";
      if (r.state === JobState.DEAD) return "dead";
      if (r.state === JobState.RETRYABLE) return "retry";
      return expected;
  }
}

function isPermanent(err: unknown): boolean {
  return err instanceof PermanentError || (err instanceof Error && err.name === "PermanentError");
}

/**
 * What a handler gets, as classes: one of each is built per job, and object
 * literals with getters were the largest self time in the worker's profile.
 * The lazily computed members (info, signal, leaseExpiresAt) are getters on
 * the prototype, so they are not copied by an object spread.
 */
class HandlerJob implements WorkerJob {
  readonly #held: Held;
  readonly id: string;
  readonly type: string;
  readonly queue: string;
  readonly payload: unknown;
  readonly rawPayload: Uint8Array;
  readonly contentType: string;
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly priority: number;
  readonly headers: Record<string, string>;
  readonly createdAt: Date | undefined;

  constructor(h: Held, payload: unknown) {
    const job = h.job;
    this.#held = h;
    this.id = job.id;
    this.type = job.type;
    this.queue = job.queue;
    this.payload = payload;
    this.rawPayload = job.payload;
    this.contentType = job.contentType;
    this.attempt = job.attempt;
    this.maxAttempts = job.maxAttempts;
    this.priority = job.priority;
    this.headers = job.headers;
    this.createdAt = job.createdAtMs === undefined ? undefined : new Date(job.createdAtMs);
  }

  get info(): JobInfo {
    return infoOf(this.#held);
  }
}

class HandlerContext implements JobContext {
  readonly #held: Held;
  readonly id: string;
  readonly type: string;
  readonly queue: string;
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly headers: Record<string, string>;

  constructor(
    h: Held,
    readonly workerId: string,
    readonly span: Span,
  ) {
    const job = h.job;
    this.#held = h;
    this.id = job.id;
    this.type = job.type;
    this.queue = job.queue;
    this.attempt = job.attempt;
    this.maxAttempts = job.maxAttempts;
    this.headers = job.headers;
  }

  get signal(): AbortSignal {
    return signalOf(this.#held);
  }

  get leaseExpiresAt(): Date | undefined {
    const ms = this.#held.expiresAtMs;
    return ms === undefined ? undefined : new Date(ms);
  }
}
