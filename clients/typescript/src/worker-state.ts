/**
 * What the parts of a running Worker share: its settings, the jobs it
 * holds a lease on (Held), and the stop state. Each concern lives in its
 * own file, as in the Go worker:
 *
 *   worker.ts            the public API, options, run() and stop()
 *   worker-lease.ts      the Lease stream: open, credit, reconnect, taking jobs
 *   worker-exec.ts       running a handler and reporting its outcome
 *   worker-heartbeat.ts  keeping leases alive, seeing cancels and lost leases
 *   worker-shutdown.ts   the graceful drain
 *   settler.ts           batched acks and nacks, retried across broker failures
 */
import type { JobViewPlain } from "@jobwire/proto/fast/jobwire/view/v1/lease_fast";
import type { Job } from "@jobwire/proto/jobwire/v1/job_pb";
import type { BackoffOptions } from "./backoff.js";
import type { JobwireClient } from "./client.js";
import { decodeFullJob } from "./lease-view.js";
import type { Logger } from "./logger.js";
import { type JobInfo, toJobInfo } from "./model.js";
import type { Settler } from "./settler.js";
import type { Handler, WorkerEvent } from "./worker.js";
import type { Executor } from "./worker-exec.js";
import type { Heartbeats } from "./worker-heartbeat.js";
import type { LeaseLoop } from "./worker-lease.js";

/** The Worker's options, checked and with their defaults filled in. */
export interface WorkerSettings {
  workerId: string;
  queues: string[];
  concurrency: number;
  handlers: Record<string, Handler>;
  leaseDurationMs: number | undefined;
  maxHeartbeatMs: number;
  shutdownTimeoutMs: number;
  rpcTimeoutMs: number;
  backoff: BackoffOptions;
  log: Logger;
  /** Never throws (a listener's error is logged). */
  onEvent: (e: WorkerEvent) => void;
  /** Per-job events are built only when someone listens. */
  hasEvents: boolean;
}

/** One job the worker holds a lease on. */
export interface Held {
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

/** The state of one Worker, shared by its parts. */
export class WorkerCore {
  readonly held = new Map<string, Held>();
  stopping = false;
  stopRequestedAt = 0;
  /** Aborted on stop(): wakes the reconnect backoff. */
  readonly stopController = new AbortController();
  /** Aborted on a second signal, or when the shutdown timeout passes. */
  readonly forceController = new AbortController();
  // Set by the Worker's constructor, right after this object is made.
  lease!: LeaseLoop;
  exec!: Executor;
  beats!: Heartbeats;

  constructor(
    readonly s: WorkerSettings,
    readonly client: JobwireClient,
    readonly settler: Settler,
  ) {}
}

export function infoOf(h: Held): JobInfo {
  h.infoCache ??= toJobInfo(h.full ?? decodeFullJob(h.encoded!, h.job.payload)!);
  return h.infoCache;
}

/** Aborts the job's signal, or records the reason for when the handler first asks for it. */
export function abortHeld(h: Held, reason: unknown): void {
  if (h.controller) h.controller.abort(reason);
  else if (h.abortReason === undefined) h.abortReason = reason;
}

export function signalOf(h: Held): AbortSignal {
  if (!h.controller) {
    h.controller = new AbortController();
    if (h.abortReason !== undefined) h.controller.abort(h.abortReason);
  }
  return h.controller.signal;
}

export function abortReasonOf(h: Held): unknown {
  if (h.controller) return h.controller.signal.aborted ? h.controller.signal.reason : undefined;
  return h.abortReason;
}
