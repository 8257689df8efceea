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
 *     worker reconnects with jittered backoff, to the next broker when its
 *     client was given several. Leases outlive the stream, so jobs in
 *     flight keep running and are acked afterwards.
 *
 * Graceful stop (SIGTERM, SIGINT, stop()): half-close the Lease request
 * stream (the broker stops sending and ends the stream), let in-flight jobs
 * finish for up to shutdownTimeoutMs, abort the rest with
 * WorkerShutdownError, flush acks and nacks, then resolve run().
 *
 * The parts live in their own files: worker-lease.ts, worker-exec.ts,
 * worker-heartbeat.ts, worker-shutdown.ts and settler.ts (worker-state.ts
 * says what they share).
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Span } from "@opentelemetry/api";
import { type BackoffOptions, DEFAULT_BACKOFF } from "./backoff.js";
import { JobwireClient } from "./client.js";
import type { JobwireError } from "./errors.js";
import { type Logger, consoleLogger } from "./logger.js";
import type { JobInfo } from "./model.js";
import { Settler } from "./settler.js";
import { type Outcome, errorMessage } from "./tracing.js";
import type { TlsOptions } from "./transport.js";
import { Executor } from "./worker-exec.js";
import { Heartbeats } from "./worker-heartbeat.js";
import { LeaseLoop } from "./worker-lease.js";
import { drain } from "./worker-shutdown.js";
import { WorkerCore, type WorkerSettings } from "./worker-state.js";

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
export { HEARTBEAT_FRACTION, MIN_HEARTBEAT_INTERVAL_MS, MIN_HEARTBEAT_RPC_TIMEOUT_MS } from "./worker-heartbeat.js";
export { STREAM_CLOSE_TIMEOUT_MS } from "./worker-lease.js";
export { FLUSH_TIMEOUT_MS } from "./worker-shutdown.js";

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
  /**
   * Broker address, or several (an array, or separated by commas) for
   * replicas on one database: see ClientOptions.address. Ignored when
   * `client` is given.
   */
  address?: string | readonly string[];
  /** Bearer token, for a broker with authentication; ignored when `client` is given. */
  token?: string;
  /** TLS for https:// brokers; ignored when `client` is given. */
  tls?: TlsOptions;
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
  /** How long acks wait for company before they are sent. Default 20ms. */
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

export class Worker {
  readonly workerId: string;
  readonly client: JobwireClient;
  private readonly ownsClient: boolean;
  private readonly handleSignals: boolean;
  private readonly core: WorkerCore;
  private started = false;
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

    const log = opts.logger ?? consoleLogger;
    this.client =
      opts.client ??
      new JobwireClient({
        ...(opts.address !== undefined ? { address: opts.address } : {}),
        ...(opts.token !== undefined ? { token: opts.token } : {}),
        ...(opts.tls !== undefined ? { tls: opts.tls } : {}),
        logger: log,
      });
    this.ownsClient = opts.client === undefined;
    this.workerId = opts.workerId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
    this.handleSignals = opts.handleSignals ?? true;
    const rpcTimeoutMs = opts.rpcTimeoutMs ?? DEFAULT_RPC_TIMEOUT_MS;
    const backoff: BackoffOptions = { ...DEFAULT_BACKOFF, ...definedOnly(opts.reconnectBackoff ?? {}) };
    const onEvent = opts.onEvent;
    const settings: WorkerSettings = {
      workerId: this.workerId,
      queues: [...opts.queues],
      concurrency,
      handlers: { ...opts.handlers },
      leaseDurationMs: opts.leaseDurationMs,
      maxHeartbeatMs: opts.maxHeartbeatIntervalMs ?? DEFAULT_MAX_HEARTBEAT_INTERVAL_MS,
      shutdownTimeoutMs: opts.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS,
      rpcTimeoutMs,
      backoff,
      log,
      hasEvents: onEvent !== undefined,
      onEvent: (e) => {
        if (onEvent === undefined) return;
        try {
          onEvent(e);
        } catch (err) {
          log.error(`onEvent threw: ${errorMessage(err)}`);
        }
      },
    };
    const settler: Settler = new Settler({
      client: this.client,
      ackFlushMs: opts.ackFlushMs ?? DEFAULT_ACK_FLUSH_MS,
      ackMaxBatch: opts.ackMaxBatch ?? DEFAULT_ACK_MAX_BATCH,
      rpcTimeoutMs,
      backoff,
      logger: log,
      streamAck: (tokens: string[]): Promise<string[]> | null => core.lease.ackOnStream(tokens),
    });
    const core: WorkerCore = new WorkerCore(settings, this.client, settler);
    core.beats = new Heartbeats(core);
    core.exec = new Executor(core);
    core.lease = new LeaseLoop(core);
    this.core = core;
  }

  /** Handlers running now. */
  get running(): number {
    return this.core.exec.running;
  }

  /** Jobs this worker holds a lease on (running, waiting, or awaiting their ack). */
  get holding(): number {
    return this.core.held.size;
  }

  /**
   * Takes and runs jobs until stop() or a signal; resolves once in-flight
   * jobs have finished (or timed out) and their acks are flushed. Rejects
   * only when the broker refuses the worker's configuration (for example an
   * invalid queue name, or a token without the work scope), after the same
   * drain, with a JobwireError naming the code.
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
    const core = this.core;
    if (!core.stopping) {
      core.stopping = true;
      core.stopRequestedAt = Date.now();
      core.s.onEvent({ type: "stopping" });
      core.s.log.info("stopping: no new jobs; waiting for jobs in flight");
      core.stopController.abort();
      // Half-close: the broker sends nothing more and ends the stream.
      core.lease.halfClose();
    }
    return (this.done ?? Promise.resolve()).catch(() => {});
  }

  private async lifecycle(): Promise<void> {
    const core = this.core;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (!core.stopping) {
        core.s.log.info(`${sig} received`);
        void this.stop();
      } else {
        core.s.log.warn(`${sig} received again: aborting jobs in flight`);
        core.forceController.abort();
      }
    };
    if (this.handleSignals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    try {
      this.fatal = await core.lease.run();
      if (this.fatal !== undefined) void this.stop();
      await drain(core);
    } finally {
      core.beats.clear();
      if (this.handleSignals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
      if (this.ownsClient) this.client.close();
      core.s.onEvent({ type: "stopped" });
    }
    if (this.fatal !== undefined) throw this.fatal;
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
