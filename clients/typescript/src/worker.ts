/**
 * Worker runs job handlers for a fleet process:
 *
 *   const worker = new Worker({
 *     address: "http://127.0.0.1:50051",
 *     queues: ["emails"],
 *     concurrency: 10,
 *     handlers: { send_welcome_email: async (job, ctx) => { ... } },
 *   });
 *   await worker.run(); // until SIGTERM/SIGINT or worker.stop()
 *
 * How it talks to the broker:
 *   - One Lease stream. `open` carries max_in_flight = concurrency; after
 *     that the worker sends `credit` only as handler slots free, so the
 *     broker never sends more jobs than the worker can start.
 *   - One Heartbeat call extends every lease the worker holds, sent when the
 *     earliest lease reaches a third of its duration (and at least every
 *     maxHeartbeatIntervalMs, so cancellations are seen promptly). A result
 *     with cancel_requested or lost aborts that handler's ctx.signal.
 *   - Acks are batched (Settler); a thrown error is a Nack, permanent for
 *     PermanentError. The slot frees when the handler returns; the ack is
 *     owed, retried across broker restarts, and flushed before run() ends.
 *   - When the stream breaks (or the broker drains with UNAVAILABLE) the
 *     worker reconnects with jittered backoff. Leases outlive the stream, so
 *     jobs in flight keep running and are acked afterwards.
 *
 * Graceful stop (SIGTERM, SIGINT, stop()): half-close the Lease request
 * stream (the broker stops sending and ends the stream), let in-flight jobs
 * finish for up to shutdownTimeoutMs, abort the rest with
 * WorkerShutdownError, flush acks and nacks, then resolve run().
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { JobViewPlain } from "@jobwire/proto/fast/jobwire/view/v1/lease_fast";
import { type Job, JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import { type LeaseRequest, LeaseRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { type Context, ROOT_CONTEXT, type Span } from "@opentelemetry/api";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay, settleWithin, sleep } from "./backoff.js";
import { JobwireClient, type JobInfo, toJobInfo } from "./client.js";
import { msToDuration, timestampToMs } from "./convert.js";
import {
  JobCancelledError,
  JobwireError,
  LeaseLostError,
  PermanentError,
  WorkerShutdownError,
  isTransient,
  toJobwireError,
} from "./errors.js";
import { type Logger, consoleLogger } from "./logger.js";
import { LAZY_INFO_MAX_BYTES, decodeFullJob, decodeLeaseView } from "./lease-view.js";
import { decodePayload } from "./payload.js";
import { PushQueue } from "./push-queue.js";
import { type SettleResult, Settler } from "./settler.js";
import { OFF_SPAN, type Outcome, context, endConsumerSpan, errorMessage, startConsumerSpan, tracingInert } from "./tracing.js";

export const DEFAULT_CONCURRENCY = 10;
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000;
/**
 * Acks wait this long for company before they are sent. Each Ack call costs
 * both ends a whole RPC: at 8,500 jobs/s per worker, 5 ms made calls of ~42
 * jobs, and 20 ms cut the broker's CPU per job by a tenth and the worker's
 * by as much (50,000-job burn-downs, CPU measured against Postgres's in the
 * same run). Slots free when the handler returns, not at the ack, so this
 * delays no job's start; it only holds each finished lease a little longer.
 */
export const DEFAULT_ACK_FLUSH_MS = 20;
export const DEFAULT_ACK_MAX_BATCH = 500;
export const DEFAULT_RPC_TIMEOUT_MS = 10_000;
/**
 * Upper bound between heartbeats while jobs are held, whatever their lease
 * length: CancelJob is only seen on a heartbeat, so this bounds how long a
 * cancelled handler keeps running (one batched call per worker, not per job).
 */
export const DEFAULT_MAX_HEARTBEAT_INTERVAL_MS = 5_000;
/** Heartbeat when this share of a lease has passed; leaves two more tries before expiry. */
export const HEARTBEAT_FRACTION = 1 / 3;
/** Floor for the heartbeat interval, whatever the lease length. */
export const MIN_HEARTBEAT_INTERVAL_MS = 50;
/** Floor for a Heartbeat call's deadline, however short the leases. */
export const MIN_HEARTBEAT_RPC_TIMEOUT_MS = 500;
/** After a stop, how long the broker gets to end the half-closed Lease stream. */
export const STREAM_CLOSE_TIMEOUT_MS = 5_000;
/** Extra time to flush acks and nacks after in-flight jobs end or time out. */
export const FLUSH_TIMEOUT_MS = 5_000;
/** Codes that mean the worker is misconfigured; reconnecting cannot help. */
const FATAL_STREAM_CODES = new Set<Code>([
  Code.InvalidArgument,
  Code.Unimplemented,
  Code.Unauthenticated,
  Code.PermissionDenied,
]);

/** What a handler receives about its job. */
export interface WorkerJob<P = unknown> {
  id: string;
  type: string;
  queue: string;
  /** Decoded JSON, or the raw bytes for non-JSON content types. */
  payload: P;
  rawPayload: Uint8Array;
  contentType: string;
  /** This attempt's number; 1 on first delivery. */
  attempt: number;
  maxAttempts: number;
  priority: number;
  headers: Record<string, string>;
  createdAt: Date | undefined;
  /** Everything the broker sent about the job. */
  info: JobInfo;
}

/** The handler's view of the attempt in progress. */
export interface JobContext {
  /**
   * Aborts when the job should stop: its reason is a JobCancelledError
   * (CancelJob was called), a LeaseLostError (the lease expired and the job
   * may run elsewhere) or a WorkerShutdownError (the shutdown timeout passed).
   */
  signal: AbortSignal;
  id: string;
  type: string;
  queue: string;
  attempt: number;
  maxAttempts: number;
  headers: Record<string, string>;
  workerId: string;
  /** When the current lease ends unless heartbeated (updated by each heartbeat). */
  readonly leaseExpiresAt: Date | undefined;
  /** The attempt's CONSUMER span; also the active span while the handler runs. */
  span: Span;
}

// biome-ignore lint/suspicious/noExplicitAny: handlers declare their own payload type.
export type Handler<P = any> = (job: WorkerJob<P>, ctx: JobContext) => unknown;

export type WorkerEvent =
  | { type: "connected" }
  | { type: "disconnected"; error?: JobwireError }
  | { type: "job_started"; jobId: string; attempt: number }
  | { type: "job_finished"; jobId: string; attempt: number; outcome: Outcome }
  | { type: "stopping" }
  | { type: "stopped" };

export interface WorkerOptions {
  /** Broker address; ignored when `client` is given. */
  address?: string;
  /** Use this client (it is not closed by the worker). */
  client?: JobwireClient;
  /** Queues to take jobs from; at least one. */
  queues: string[];
  /** Handlers run at once, at most. Default 10. */
  concurrency?: number;
  /** One handler per job type. A job of any other type fails permanently. */
  handlers: Record<string, Handler>;
  /** Shown in job details and error history. Default host:pid:random. */
  workerId?: string;
  /** Lease length asked for jobs that do not set their own. Default: the queue's or broker's. */
  leaseDurationMs?: number;
  /** Longest gap between heartbeats while jobs are held. Default 5s. */
  maxHeartbeatIntervalMs?: number;
  /** How long a graceful stop waits for running handlers. Default 30s. */
  shutdownTimeoutMs?: number;
  /** Stop gracefully on SIGTERM and SIGINT (a second signal skips the wait). Default true. */
  handleSignals?: boolean;
  /** Default 5ms. */
  ackFlushMs?: number;
  /** Default 500. */
  ackMaxBatch?: number;
  /** Deadline for each Ack, Nack and Heartbeat call. Default 10s. */
  rpcTimeoutMs?: number;
  /** Reconnect and RPC-retry backoff. Default 100ms doubling to 5s, jittered. */
  reconnectBackoff?: Partial<BackoffOptions>;
  logger?: Logger;
  /** Called on lifecycle events; for metrics and tests. Must not throw. */
  onEvent?: (e: WorkerEvent) => void;
}

/** One job the worker holds a lease on. */
interface Held {
  token: string;
  /** What every job needs (jobwire.view.v1.JobView); the whole Job is decoded only for job.info (infoOf). */
  job: JobViewPlain;
  /**
   * The encoded LeasedJob, for job.info: a view into the lease batch, which
   * it keeps alive while the job is held. Large jobs are decoded whole at
   * once instead (full), so that their payload is not held twice.
   */
  encoded: Uint8Array | undefined;
  full: Job | undefined;
  /** JobInfo, built on first read (infoOf): most handlers never look, and dates cost CPU per job. */
  infoCache: JobInfo | undefined;
  /** Which Lease stream delivered it; credit is returned only to that stream. */
  streamGen: number;
  leaseMs: number;
  /** When the lease ends unless heartbeated, epoch ms. */
  expiresAtMs: number | undefined;
  nextBeatAt: number;
  /**
   * Made only when the handler reads ctx.signal: most handlers never do, and
   * one AbortController per job was a measurable share of a worker's CPU.
   * Until then an abort is kept in abortReason.
   */
  controller: AbortController | undefined;
  abortReason: unknown;
  lost: boolean;
  cancelRequested: boolean;
  started: boolean;
  /** The handler has finished; its ack or nack may already be on its way. */
  settling: boolean;
  /** When the handler finished (epoch ms). */
  settledAt: number;
  /** execute() is over: the slot is free. */
  handlerEnded: boolean;
  /** report() is over: the broker answered, or the worker gave up. */
  reportEnded: boolean;
  /** OpenTelemetry was inert when the job arrived (tracingInert): no span context to make or enter. */
  inert: boolean;
}

interface Stream {
  gen: number;
  requests: PushQueue<LeaseRequest>;
  abort: AbortController;
  /** The credit the broker holds for this stream: max_in_flight, less the jobs it sent, plus the credit returned. */
  brokerCredit: number;
  /** Credit owed to the broker and not sent yet (see returnCredit). */
  owed: number;
  creditQueued: boolean;
}

/** Most lease tokens per Heartbeat call; the broker's limit is 10,000. */
const HEARTBEAT_CHUNK = 1000;

export class Worker {
  readonly workerId: string;
  readonly client: JobwireClient;
  private readonly ownsClient: boolean;
  private readonly queues: string[];
  private readonly concurrency: number;
  private readonly handlers: Record<string, Handler>;
  private readonly leaseDurationMs: number | undefined;
  private readonly maxHeartbeatMs: number;
  private readonly shutdownTimeoutMs: number;
  private readonly handleSignals: boolean;
  private readonly rpcTimeoutMs: number;
  private readonly backoff: BackoffOptions;
  private readonly log: Logger;
  private readonly onEvent: (e: WorkerEvent) => void;
  /** Per-job events are built only when someone listens. */
  private readonly hasEvents: boolean;
  private readonly settler: Settler;

  private readonly held = new Map<string, Held>();
  /** Leased jobs waiting for a free slot (only after a reconnect, see accept()). */
  private readonly waiting: Held[] = [];
  private runningCount = 0;
  private readonly handlerDone = new Map<Held, Promise<void>>();
  /** Attempts whose result is being reported (ack or nack owed, span open). */
  private readonly reporting = new Map<Held, Promise<void>>();
  private stream: Stream | undefined;
  private streamGen = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatAt = Infinity;
  private heartbeatInFlight = false;
  private heartbeatFailures = 0;

  private started = false;
  private stopping = false;
  private stopRequestedAt = 0;
  /** Aborted on stop(): wakes the reconnect backoff. */
  private readonly stopController = new AbortController();
  /** Aborted on a second signal, or when the shutdown timeout passes. */
  private readonly forceController = new AbortController();
  private fatal: JobwireError | undefined;
  private done: Promise<void> | undefined;

  constructor(opts: WorkerOptions) {
    if (!Array.isArray(opts.queues) || opts.queues.length === 0) throw new TypeError("Worker: queues must name at least one queue");
    const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new TypeError(`Worker: concurrency must be an integer >= 1, got ${concurrency}`);
    if (opts.handlers === null || typeof opts.handlers !== "object" || Object.keys(opts.handlers).length === 0) {
      throw new TypeError("Worker: handlers must map at least one job type to a function");
    }
    for (const [type, h] of Object.entries(opts.handlers)) {
      if (typeof h !== "function") throw new TypeError(`Worker: the handler for "${type}" is not a function`);
    }
    if (opts.leaseDurationMs !== undefined && !(opts.leaseDurationMs > 0)) throw new TypeError("Worker: leaseDurationMs must be > 0");

    this.client = opts.client ?? new JobwireClient(opts.address !== undefined ? { address: opts.address } : {});
    this.ownsClient = opts.client === undefined;
    this.queues = [...opts.queues];
    this.concurrency = concurrency;
    this.handlers = { ...opts.handlers };
    this.workerId = opts.workerId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
    this.leaseDurationMs = opts.leaseDurationMs;
    this.maxHeartbeatMs = opts.maxHeartbeatIntervalMs ?? DEFAULT_MAX_HEARTBEAT_INTERVAL_MS;
    this.shutdownTimeoutMs = opts.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;
    this.handleSignals = opts.handleSignals ?? true;
    this.rpcTimeoutMs = opts.rpcTimeoutMs ?? DEFAULT_RPC_TIMEOUT_MS;
    this.backoff = { ...DEFAULT_BACKOFF, ...definedOnly(opts.reconnectBackoff ?? {}) };
    this.log = opts.logger ?? consoleLogger;
    const onEvent = opts.onEvent;
    this.hasEvents = onEvent !== undefined;
    this.onEvent = (e) => {
      if (onEvent === undefined) return;
      try {
        onEvent(e);
      } catch (err) {
        this.log.error(`onEvent threw: ${errorMessage(err)}`);
      }
    };
    this.settler = new Settler({
      client: this.client,
      ackFlushMs: opts.ackFlushMs ?? DEFAULT_ACK_FLUSH_MS,
      ackMaxBatch: opts.ackMaxBatch ?? DEFAULT_ACK_MAX_BATCH,
      rpcTimeoutMs: this.rpcTimeoutMs,
      backoff: this.backoff,
      logger: this.log,
    });
  }

  /** Handlers running now. */
  get running(): number {
    return this.runningCount;
  }

  /** Jobs this worker holds a lease on (running, waiting, or awaiting their ack). */
  get holding(): number {
    return this.held.size;
  }

  /**
   * Takes and runs jobs until stop() or a signal; resolves once in-flight
   * jobs have finished (or timed out) and their acks are flushed. Rejects
   * only when the broker refuses the worker's configuration (for example an
   * invalid queue name), after the same drain.
   */
  run(): Promise<void> {
    if (this.started) throw new Error("Worker.run() was already called");
    this.started = true;
    this.done = this.lifecycle();
    return this.done;
  }

  /**
   * Stops gracefully, the same path SIGTERM takes. Resolves when run() does
   * (at once if run() was never called).
   */
  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      this.stopRequestedAt = Date.now();
      this.onEvent({ type: "stopping" });
      this.log.info("stopping: no new jobs; waiting for jobs in flight");
      this.stopController.abort();
      // Half-close: the broker sends nothing more and ends the stream.
      this.stream?.requests.close();
    }
    return (this.done ?? Promise.resolve()).catch(() => {});
  }

  private async lifecycle(): Promise<void> {
    const onSignal = (sig: NodeJS.Signals): void => {
      if (!this.stopping) {
        this.log.info(`${sig} received`);
        void this.stop();
      } else {
        this.log.warn(`${sig} received again: aborting jobs in flight`);
        this.forceController.abort();
      }
    };
    if (this.handleSignals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    try {
      await this.leaseLoop();
      await this.drain();
    } finally {
      this.clearHeartbeat();
      if (this.handleSignals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
      if (this.ownsClient) this.client.close();
      this.onEvent({ type: "stopped" });
    }
    if (this.fatal !== undefined) throw this.fatal;
  }

  // ---- the Lease stream -------------------------------------------------

  private async leaseLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      let connected = false;
      let error: JobwireError | undefined;
      try {
        await this.runStream(() => {
          connected = true;
          failures = 0;
          this.onEvent({ type: "connected" });
        });
      } catch (err) {
        error = toJobwireError(err);
      }
      if (connected) this.onEvent(error === undefined ? { type: "disconnected" } : { type: "disconnected", error });
      if (this.stopping) break;
      if (error !== undefined && FATAL_STREAM_CODES.has(error.code)) {
        this.log.error(`the broker refused the Lease stream: ${error.message}`);
        this.fatal = error;
        void this.stop();
        break;
      }
      failures++;
      const delay = backoffDelay(failures, this.backoff);
      this.log.warn(
        `Lease stream ${error === undefined ? "ended" : `failed (${error.message})`}; reconnecting in ${delay}ms`,
      );
      await sleep(delay, this.stopController.signal);
    }
  }

  private async runStream(onConnected: () => void): Promise<void> {
    const gen = ++this.streamGen;
    const requests = new PushQueue<LeaseRequest>();
    const abort = new AbortController();
    const stream: Stream = { gen, requests, abort, brokerCredit: this.concurrency, owed: 0, creditQueued: false };
    this.stream = stream;
    requests.push(
      create(LeaseRequestSchema, {
        msg: {
          case: "open",
          value: {
            queues: this.queues,
            workerId: this.workerId,
            maxInFlight: this.concurrency,
            ...(this.leaseDurationMs !== undefined ? { leaseDuration: msToDuration(this.leaseDurationMs) } : {}),
          },
        },
      }),
    );
    // A stop() that lands while the stream is open half-closes it; if the
    // broker does not end it soon after, cut it.
    let closeTimer: NodeJS.Timeout | undefined;
    const onStop = (): void => {
      closeTimer = setTimeout(
        () => abort.abort(new Error("the broker did not end the Lease stream after half-close")),
        STREAM_CLOSE_TIMEOUT_MS,
      );
    };
    this.stopController.signal.addEventListener("abort", onStop, { once: true });
    try {
      const batches = this.client.leaseBatches(requests, {
        signal: abort.signal,
        timeoutMs: 0, // the stream lives as long as the worker
        onHeader: onConnected,
      });
      for await (const batch of batches) {
        const inert = tracingInert();
        stream.brokerCredit -= batch.length;
        for (const bytes of batch) this.accept(bytes, gen, inert);
        this.flushCredit(stream);
        if (batch.length > 0) this.scheduleHeartbeat();
      }
    } catch (err) {
      // After a stop, a stream we cut ourselves is not an error.
      if (this.stopping && abort.signal.aborted) return;
      throw err;
    } finally {
      this.stopController.signal.removeEventListener("abort", onStop);
      clearTimeout(closeTimer);
      requests.close();
      if (this.stream?.gen === gen) this.stream = undefined;
    }
  }

  /**
   * Owes one credit to the stream that delivered a job. Jobs from an older
   * stream return nothing: their credit died with it.
   */
  private returnCredit(gen: number): void {
    const s = this.stream;
    if (s === undefined || s.gen !== gen) return;
    s.owed++;
    this.flushCredit(s);
  }

  /**
   * Sends what is owed once the broker's credit for the stream falls below
   * half of max_in_flight, coalescing a tick's credits into one message.
   * Above that the broker can send work to every slot it knows is free, and
   * more credit would not change what it does; a message per finished job
   * cost both ends CPU per job at low rates (one HTTP/2 frame, encoded,
   * sent, read and decoded). At full load the broker's credit stays low,
   * so credit goes back as soon as slots free up, as before.
   */
  private flushCredit(s: Stream): void {
    if (s.owed === 0 || s.creditQueued || s.brokerCredit * 2 >= this.concurrency) return;
    s.creditQueued = true;
    queueMicrotask(() => {
      s.creditQueued = false;
      const n = s.owed;
      if (n === 0 || this.stream !== s || s.requests.isClosed) return;
      s.owed = 0;
      s.brokerCredit += n;
      s.requests.push(create(LeaseRequestSchema, { msg: { case: "credit", value: { count: n } } }));
    });
  }

  // ---- jobs -------------------------------------------------------------

  /**
   * Takes a leased job. Normally a slot is free, because credit only comes
   * from free slots. Right after a reconnect the new stream is opened with
   * full credit while jobs from the old one may still run; jobs that arrive
   * then wait here (heartbeated) until a slot frees, so no more than
   * `concurrency` handlers ever run at once. The overshoot is bounded by the
   * jobs that were running when the old stream broke.
   */
  private accept(bytes: Uint8Array, gen: number, inert: boolean): void {
    let view;
    try {
      view = decodeLeaseView(bytes);
    } catch (err) {
      this.log.error(`the broker sent a leased job that cannot be read (${errorMessage(err)}); ignoring it`);
      return;
    }
    const job = view.job;
    const token = view.leaseToken;
    if (job === undefined || token === "") {
      this.log.error("the broker sent a leased job without a job or token; ignoring it");
      return;
    }
    if (this.held.has(token)) return;
    const now = Date.now();
    const expiresAtMs = view.leaseExpiresAtMs;
    const leaseMs = Math.max(
      MIN_HEARTBEAT_INTERVAL_MS * 3,
      job.leaseDurationMs ?? this.leaseDurationMs ?? (expiresAtMs !== undefined ? expiresAtMs - now : 30_000),
    );
    const large = bytes.length > LAZY_INFO_MAX_BYTES;
    const h: Held = {
      token,
      job,
      encoded: large ? undefined : bytes,
      full: large ? decodeFullJob(bytes, job.payload) : undefined,
      infoCache: undefined,
      streamGen: gen,
      leaseMs,
      expiresAtMs,
      nextBeatAt: now + this.beatInterval(leaseMs),
      controller: undefined,
      abortReason: undefined,
      lost: false,
      cancelRequested: job.cancelRequested,
      started: false,
      settling: false,
      settledAt: 0,
      handlerEnded: false,
      reportEnded: false,
      inert,
    };
    this.held.set(h.token, h);
    if (h.cancelRequested) abortHeld(h, new JobCancelledError(`job ${job.id} was cancelled`));
    if (this.runningCount < this.concurrency) this.start(h);
    else this.waiting.push(h);
  }

  private start(h: Held): void {
    h.started = true;
    this.runningCount++;
    const p = this.execute(h);
    if (!h.handlerEnded) this.handlerDone.set(h, p);
  }

  private slotFreed(h: Held): void {
    this.runningCount--;
    this.returnCredit(h.streamGen);
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
          workerId: this.workerId,
          headers: job.headers,
        }));
      }
      if (this.hasEvents) this.onEvent({ type: "job_started", jobId: job.id, attempt: job.attempt });
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
      this.log.error(`job ${job.id}: internal error: ${errorMessage(err)}`);
    } finally {
      h.handlerEnded = true;
      this.handlerDone.delete(h);
      this.slotFreed(h);
    }
  }

  private async invoke(h: Held, span: Span): Promise<void> {
    const job = h.job;
    const handler = Object.hasOwn(this.handlers, job.type) ? this.handlers[job.type] : undefined;
    if (handler === undefined) {
      const known = Object.keys(this.handlers).sort().join(", ");
      throw new PermanentError(
        `no handler for job type "${job.type}" on worker ${this.workerId} (it handles: ${known})`,
      );
    }
    let payload: unknown;
    try {
      payload = decodePayload(job.payload, job.contentType);
    } catch (err) {
      throw new PermanentError(`payload is not valid ${job.contentType || "JSON"}: ${errorMessage(err)}`, { cause: err });
    }
    const wj = new HandlerJob(h, payload);
    const jctx = new HandlerContext(h, this.workerId, span);
    await handler(wj, jctx);
  }

  /** Acks or nacks one attempt and ends its span. Never rejects. */
  private async report(h: Held, span: Span, ok: boolean, failure: unknown): Promise<void> {
    try {
      let outcome: Outcome;
      try {
        if (h.lost) {
          outcome = "lost";
          this.log.warn(`job ${h.job.id}: the lease was lost while the handler ran; its result is discarded`);
        } else if (ok) {
          outcome = outcomeOf(await this.settler.ack(h.token), "completed");
        } else {
          const permanent = isPermanent(failure);
          const shutdown = abortReasonOf(h) instanceof WorkerShutdownError;
          const r = await this.settler.nack({
            token: h.token,
            error: errorMessage(failure),
            permanent,
            // Aborted by our own shutdown: let another worker pick it up now.
            ...(shutdown && !permanent ? { retryAfterMs: 0 } : {}),
          });
          outcome = outcomeOf(r, h.cancelRequested ? "cancelled" : permanent ? "dead" : "retry");
        }
      } finally {
        this.held.delete(h.token);
      }
      if (span !== OFF_SPAN) endConsumerSpan(span, outcome, ok ? undefined : failure);
      if (this.hasEvents) this.onEvent({ type: "job_finished", jobId: h.job.id, attempt: h.job.attempt, outcome });
      if (outcome === "lost") abortHeld(h, new LeaseLostError(`lease on job ${h.job.id} was lost`));
    } catch (err) {
      this.log.error(`job ${h.job.id}: reporting the result failed: ${errorMessage(err)}`);
    } finally {
      h.reportEnded = true;
      this.reporting.delete(h);
    }
  }

  // ---- heartbeats -------------------------------------------------------

  private beatInterval(leaseMs: number): number {
    return Math.max(MIN_HEARTBEAT_INTERVAL_MS, Math.min(this.maxHeartbeatMs, leaseMs * HEARTBEAT_FRACTION));
  }

  private scheduleHeartbeat(): void {
    if (this.heartbeatInFlight) return; // rescheduled when it returns
    let due = Infinity;
    for (const h of this.held.values()) if (!h.lost && h.nextBeatAt < due) due = h.nextBeatAt;
    if (due === Infinity) {
      this.clearHeartbeat();
      return;
    }
    if (this.heartbeatTimer !== undefined && this.heartbeatAt <= due) return;
    this.clearHeartbeat();
    this.heartbeatAt = due;
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = undefined;
      this.heartbeatAt = Infinity;
      // One Heartbeat covers every held job: it belongs to no job's trace.
      void context.with(ROOT_CONTEXT, () => this.heartbeat());
    }, Math.max(0, due - Date.now()));
  }

  private clearHeartbeat(): void {
    if (this.heartbeatTimer !== undefined) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    this.heartbeatAt = Infinity;
  }

  /**
   * Extends every lease held, in as few calls as the broker accepts: one
   * call per HEARTBEAT_CHUNK leases (the broker refuses more than 10,000
   * tokens per call, and a worker with deep concurrency can hold more).
   */
  private async heartbeat(): Promise<void> {
    // A finished job's ack is usually answered within milliseconds;
    // heartbeating it meanwhile only makes the two statements wait on each
    // other's row locks (in a burn-down, thousands of rows per second). Its
    // lease is kept alive only if the ack has been stuck for a third of the
    // lease, say while the broker is unreachable.
    const now = Date.now();
    const all: Held[] = [];
    for (const h of this.held.values()) {
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
      this.scheduleHeartbeat();
      return;
    }
    this.heartbeatInFlight = true;
    try {
      for (let i = 0; i < all.length; i += HEARTBEAT_CHUNK) await this.heartbeatChunk(all.slice(i, i + HEARTBEAT_CHUNK));
    } finally {
      this.heartbeatInFlight = false;
    }
    this.scheduleHeartbeat();
  }

  private async heartbeatChunk(batch: Held[]): Promise<void> {
    const sentAt = Date.now();
    try {
      // A heartbeat answered after the shortest lease ran out is useless:
      // give up sooner and try again.
      const shortest = Math.min(...batch.map((h) => h.leaseMs));
      const res = await this.client.workers.heartbeat(
        { leaseTokens: batch.map((h) => h.token) },
        { timeoutMs: Math.max(MIN_HEARTBEAT_RPC_TIMEOUT_MS, Math.min(this.rpcTimeoutMs, shortest / 2)) },
      );
      this.heartbeatFailures = 0;
      res.results.forEach((r, i) => {
        const h = r.leaseToken !== "" ? this.held.get(r.leaseToken) : batch[i];
        if (h === undefined) return;
        if (r.lost) {
          this.markLost(h);
          return;
        }
        h.expiresAtMs = timestampToMs(r.leaseExpiresAt) ?? h.expiresAtMs;
        h.nextBeatAt = sentAt + this.beatInterval(h.leaseMs);
        if (r.cancelRequested && !h.cancelRequested) {
          h.cancelRequested = true;
          this.log.info(`job ${h.job.id}: cancel requested`);
          abortHeld(h, new JobCancelledError(`job ${h.job.id} was cancelled`));
        }
      });
    } catch (err) {
      const e = toJobwireError(err);
      this.heartbeatFailures++;
      // Try again soon, but well inside the shortest lease.
      const retryIn = Math.min(backoffDelay(this.heartbeatFailures, this.backoff), ...batch.map((h) => h.leaseMs / 6));
      const level = isTransient(e) ? "warn" : "error";
      this.log[level](`heartbeat of ${batch.length} lease(s) failed, retrying in ${Math.round(retryIn)}ms: ${e.message}`);
      for (const h of batch) h.nextBeatAt = Date.now() + retryIn;
    }
  }

  private markLost(h: Held): void {
    if (h.lost) return;
    h.lost = true;
    if (h.settling) {
      // A heartbeat that crossed this job's ack: the ack's answer decides.
      this.log.debug(`job ${h.job.id}: lease gone after the handler finished`);
      return;
    }
    this.log.warn(`job ${h.job.id}: lease lost`);
    abortHeld(h, new LeaseLostError(`lease on job ${h.job.id} was lost`));
    if (!h.started) {
      // Never started: nothing to wait for.
      const i = this.waiting.indexOf(h);
      if (i >= 0) this.waiting.splice(i, 1);
      this.held.delete(h.token);
      this.returnCredit(h.streamGen);
    }
  }

  // ---- shutdown ---------------------------------------------------------

  private async drain(): Promise<void> {
    const deadline = this.stopRequestedAt + this.shutdownTimeoutMs;
    const timeout = setTimeout(() => this.forceController.abort(), Math.max(0, deadline - Date.now()));
    const forced = once(this.forceController.signal);
    try {
      while (this.handlerDone.size > 0 || this.waiting.length > 0) {
        if (this.forceController.signal.aborted) break;
        await Promise.race([Promise.allSettled([...this.handlerDone.values()]), forced]);
      }
    } finally {
      clearTimeout(timeout);
    }
    if (this.handlerDone.size > 0 || this.waiting.length > 0) {
      this.log.warn(
        `shutdown timeout: aborting ${this.handlerDone.size} running job(s), returning ${this.waiting.length} waiting job(s)`,
      );
      // Jobs never started go back at once, without running.
      for (const h of this.waiting.splice(0)) {
        void this.settler
          .nack({ token: h.token, error: "worker stopped before starting the job", permanent: false, retryAfterMs: 0 })
          .finally(() => this.held.delete(h.token));
      }
      const reason = new WorkerShutdownError(`worker ${this.workerId} is shutting down`);
      for (const h of this.held.values()) if (h.started) abortHeld(h, reason);
      await settleWithin(Promise.allSettled([...this.handlerDone.values()]), FLUSH_TIMEOUT_MS);
      if (this.handlerDone.size > 0) {
        this.log.error(`${this.handlerDone.size} handler(s) ignored their abort signal; their leases will expire`);
      }
    }
    const abandoned = await this.settler.flush(Date.now() + FLUSH_TIMEOUT_MS);
    if (abandoned > 0) this.log.error(`${abandoned} ack(s)/nack(s) could not be delivered; those jobs will run again`);
    // Let every attempt end its span before run() resolves, so an exporter
    // flushed right after sees them.
    await settleWithin(Promise.allSettled([...this.reporting.values()]), 1000);
  }
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

function infoOf(h: Held): JobInfo {
  h.infoCache ??= toJobInfo(h.full ?? decodeFullJob(h.encoded!, h.job.payload)!);
  return h.infoCache;
}

function isPermanent(err: unknown): boolean {
  return err instanceof PermanentError || (err instanceof Error && err.name === "PermanentError");
}

function outcomeOf(r: SettleResult, expected: Outcome): Outcome {
  switch (r.kind) {
    case "acked":
      return "completed";
    case "lost":
    case "abandoned":
      return "lost";
    case "nacked":
      if (r.state === JobState.CANCELLED) return "cancelled";
      if (r.state === JobState.DEAD) return "dead";
      if (r.state === JobState.RETRYABLE) return "retry";
      return expected;
  }
}

/** Aborts the job's signal, or records the reason for when the handler first asks for it. */
function abortHeld(h: Held, reason: unknown): void {
  if (h.controller) h.controller.abort(reason);
  else if (h.abortReason === undefined) h.abortReason = reason;
}

function signalOf(h: Held): AbortSignal {
  if (!h.controller) {
    h.controller = new AbortController();
    if (h.abortReason !== undefined) h.controller.abort(h.abortReason);
  }
  return h.controller.signal;
}

function abortReasonOf(h: Held): unknown {
  if (h.controller) return h.controller.signal.aborted ? h.controller.signal.reason : undefined;
  return h.abortReason;
}

function once(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
