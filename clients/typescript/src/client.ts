import { create } from "@bufbuild/protobuf";
import { type Client, type Transport, createClient } from "@connectrpc/connect";
import { AdminService, type QueueStats } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { type Job, type JobSpec, RetryPolicySchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { encodeLeasedJob } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import { type LeaseResponse, WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import {
  type JobStateName,
  dateToTimestamp,
  durationToMs,
  msToDuration,
  stateFromName,
  stateName,
  timestampToDate,
} from "./convert.js";
import { NotFoundError } from "./errors.js";
import { decodePayload, encodePayload } from "./payload.js";
import { type CallOptions, type RetryOptions, withRetry } from "./retry.js";
import { ATTR, SpanStatusCode, context, errorMessage, startProducerSpan, trace } from "./tracing.js";
import { type LeaseBatches, type OwnedTransport, type TransportOptions, createTransport, normalizeAddress } from "./transport.js";
import { Code } from "@connectrpc/connect";
import type { Span } from "@opentelemetry/api";

/** The queue jobs go to when the caller names none. */
export const DEFAULT_QUEUE = "default";

export interface ClientOptions extends TransportOptions {
  /** Broker address: "http://host:port", "host:port". Default http://127.0.0.1:50051. */
  address?: string;
  /** Queue used when enqueue options name none. Default "default". */
  defaultQueue?: string;
  /** Deadline for each call (retries included) unless the call sets one. Default 10s. */
  timeoutMs?: number;
  /** How UNAVAILABLE answers are retried. Default 5 tries, 100ms..5s jittered. */
  retry?: RetryOptions;
  /**
   * Use this connect-es transport instead of opening an HTTP/2 connection to
   * `address` (for interceptors, TLS, or an in-memory broker in tests).
   */
  transport?: Transport;
}

/** Shapes the wait before each retry after a failed attempt (broker side). */
export interface JobRetryPolicy {
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** At least 1. */
  multiplier?: number;
  /** In [0, 1]. */
  jitter?: number;
}

export interface EnqueueOptions {
  /** Default: the client's defaultQueue. */
  queue?: string;
  /** When the job becomes due. At most one of runAt and delayMs. */
  runAt?: Date;
  delayMs?: number;
  /** Higher runs sooner. Default 0. */
  priority?: number;
  /** At least 1. Default: the queue's setting, then the broker's (25). */
  maxAttempts?: number;
  /** Lease length for each attempt unless heartbeated. */
  leaseDurationMs?: number;
  retry?: JobRetryPolicy;
  /** A second enqueue with the same key on the same queue, within the TTL, creates nothing. */
  idempotencyKey?: string;
  idempotencyTtlMs?: number;
  /** Free-form headers. Trace context is added to them automatically. */
  headers?: Record<string, string>;
  /** Default application/json, or application/octet-stream for a Uint8Array payload. */
  contentType?: string;
}

export interface JobToEnqueue extends EnqueueOptions {
  type: string;
  /** Any JSON-serialisable value, or a Uint8Array sent as raw bytes. */
  payload?: unknown;
}

export interface EnqueueResult {
  id: string;
  /** True when the idempotency key matched a live job and nothing was created. */
  duplicate: boolean;
}

export interface JobErrorInfo {
  attempt: number;
  message: string;
  at: Date | undefined;
  workerId: string;
}

/** A job as the broker reports it, with plain JavaScript types. */
export interface JobInfo {
  id: string;
  queue: string;
  type: string;
  /** The payload's bytes; decode with decodeJobPayload(). */
  payload: Uint8Array;
  contentType: string;
  state: JobStateName;
  priority: number;
  /** Attempts started so far; the first lease makes it 1. */
  attempt: number;
  maxAttempts: number;
  runAt: Date | undefined;
  createdAt: Date | undefined;
  finishedAt: Date | undefined;
  headers: Record<string, string>;
  idempotencyKey: string;
  /** Every failed attempt, oldest first. */
  errors: JobErrorInfo[];
  leaseExpiresAt: Date | undefined;
  cancelRequested: boolean;
  leaseDurationMs: number | undefined;
  workerId: string;
}

export interface ReplayOptions {
  /** Either jobIds or filter. */
  jobIds?: string[];
  filter?: {
    queue: string;
    type?: string;
    errorContains?: string;
    finishedAfter?: Date;
    finishedBefore?: Date;
  };
  limit?: number;
  dryRun?: boolean;
  includeCancelled?: boolean;
}

export interface ListJobsOptions {
  queue?: string;
  type?: string;
  states?: JobStateName[];
  pageSize?: number;
  pageToken?: string;
}

export interface QueueStatsInfo {
  queue: string;
  scheduled: number;
  available: number;
  running: number;
  retryable: number;
  completed: number;
  dead: number;
  cancelled: number;
  oldestAvailableAgeMs: number;
}

export interface QueueConfig {
  retry?: JobRetryPolicy;
  maxAttempts?: number;
  leaseDurationMs?: number;
  /** How long completed jobs stay as history; 0 deletes them at ack. Default: the broker's (24 h). */
  completedRetentionMs?: number;
}

/**
 * JobwireClient is the producer's and operator's handle on a broker:
 * enqueue jobs, look them up, cancel and replay them. Every call has a
 * deadline and retries UNAVAILABLE answers with jittered backoff; failures
 * reject with a JobwireError (see errors.ts).
 *
 * Enqueue retries are safe to repeat only with an idempotency key: without
 * one, a retry after a connection that broke mid-call may enqueue twice.
 * Delivery is at least once anyway, so handlers must be idempotent.
 */
export class JobwireClient {
  readonly address: string;
  readonly defaultQueue: string;
  /** The generated connect-es clients, for calls this class does not wrap. */
  readonly jobs: Client<typeof JobService>;
  readonly workers: Client<typeof WorkerService>;
  /** WorkerService.Lease with each batch's LeasedJobs left encoded, which the Worker reads as views (lease-view.ts). */
  readonly leaseBatches: LeaseBatches;
  readonly admin: Client<typeof AdminService>;
  private readonly owned: OwnedTransport;
  private readonly timeoutMs: number | undefined;
  private readonly retry: RetryOptions;

  constructor(opts: ClientOptions = {}) {
    this.address = normalizeAddress(opts.address ?? process.env["JOBWIRE_ADDRESS"] ?? "");
    this.defaultQueue = opts.defaultQueue ?? DEFAULT_QUEUE;
    if (opts.transport !== undefined) {
      // Someone else's transport: the Lease stream goes through connect-es, and its jobs are encoded again for the Worker.
      const lease = createClient(WorkerService, opts.transport).lease;
      this.owned = {
        transport: opts.transport,
        leaseBatches: (requests, call) =>
          encodedJobs(lease(requests, { signal: call.signal, timeoutMs: call.timeoutMs, headers: call.header, onHeader: call.onHeader })),
        close: () => {},
      };
    } else {
      this.owned = createTransport(this.address, opts);
    }
    this.jobs = createClient(JobService, this.owned.transport);
    this.workers = createClient(WorkerService, this.owned.transport);
    this.leaseBatches = this.owned.leaseBatches;
    this.admin = createClient(AdminService, this.owned.transport);
    this.timeoutMs = opts.timeoutMs;
    this.retry = opts.retry ?? {};
  }

  /** Enqueues one job. The payload is sent as JSON unless it is a Uint8Array. */
  async enqueue(type: string, payload?: unknown, opts: EnqueueOptions & CallOptions = {}): Promise<EnqueueResult> {
    const [r] = await this.enqueueMany([{ ...opts, type, payload }], opts);
    if (r === undefined) throw new Error("broker returned no result for the enqueued job");
    return r;
  }

  /** Enqueues several jobs in one call, all or nothing; results are in order. */
  async enqueueMany(jobs: JobToEnqueue[], call: CallOptions = {}): Promise<EnqueueResult[]> {
    if (jobs.length === 0) return [];
    const spans: Span[] = [];
    const specs: JobSpec[] = [];
    for (const j of jobs) {
      const queue = j.queue ?? this.defaultQueue;
      const { span, headers } = startProducerSpan(queue, j.type, j.headers ?? {}, jobs.length);
      spans.push(span);
      // Not buildJobSpec({ ...j, queue, headers }): an object spread per job
      // was a measurable share of the producer's CPU in bulk enqueues.
      specs.push(jobSpec(j, queue, headers));
    }
    // One job: the RPC runs in its PRODUCER span, so a tracing broker's
    // Enqueue span is that span's child. A batch runs in the caller's context.
    const rpcContext = spans.length === 1 ? trace.setSpan(context.active(), spans[0]!) : context.active();
    try {
      const res = await context.with(rpcContext, () => this.call((o) => this.jobs.enqueue({ jobs: specs }, o), call));
      const results = res.results.map((r) => ({ id: r.jobId, duplicate: r.duplicate }));
      results.forEach((r, i) => {
        const span = spans[i];
        if (span === undefined) return;
        span.setAttribute(ATTR.messageId, r.id);
        if (r.duplicate) span.setAttribute(ATTR.duplicate, true);
      });
      return results;
    } catch (err) {
      for (const span of spans) {
        span.recordException(err instanceof Error ? err : String(err));
        span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(err) });
      }
      throw err;
    } finally {
      for (const span of spans) span.end();
    }
  }

  /** The job with this id. Rejects with NotFoundError when there is none. */
  async getJob(id: string, call: CallOptions = {}): Promise<JobInfo> {
    const res = await this.call((o) => this.jobs.getJob({ id }, o), call);
    return requireJob(res.job, id);
  }

  /**
   * Cancels a waiting job at once; on a RUNNING job sets cancel_requested,
   * which its worker sees on its next heartbeat. Returns the job after the
   * call. A completed or dead job rejects with FailedPreconditionError.
   */
  async cancelJob(id: string, call: CallOptions = {}): Promise<JobInfo> {
    const res = await this.call((o) => this.jobs.cancelJob({ id }, o), call);
    return requireJob(res.job, id);
  }

  /** Makes DEAD (and optionally CANCELLED) jobs AVAILABLE again. */
  async replay(opts: ReplayOptions, call: CallOptions = {}): Promise<{ replayed: number; jobIds: string[] }> {
    const f = opts.filter;
    const req = {
      jobIds: opts.jobIds ?? [],
      limit: opts.limit ?? 0,
      dryRun: opts.dryRun ?? false,
      includeCancelled: opts.includeCancelled ?? false,
      ...(f === undefined
        ? {}
        : {
            filter: {
              queue: f.queue,
              type: f.type ?? "",
              errorContains: f.errorContains ?? "",
              ...(f.finishedAfter ? { finishedAfter: dateToTimestamp(f.finishedAfter) } : {}),
              ...(f.finishedBefore ? { finishedBefore: dateToTimestamp(f.finishedBefore) } : {}),
            },
          }),
    };
    const res = await this.call((o) => this.admin.replay(req, o), call);
    return { replayed: res.replayed, jobIds: res.jobIds };
  }

  /** One page of jobs, newest first. */
  async listJobs(opts: ListJobsOptions = {}, call: CallOptions = {}): Promise<{ jobs: JobInfo[]; nextPageToken: string }> {
    const res = await this.call(
      (o) =>
        this.admin.listJobs(
          {
            queue: opts.queue ?? "",
            type: opts.type ?? "",
            states: (opts.states ?? []).map(stateFromName),
            pageSize: opts.pageSize ?? 0,
            pageToken: opts.pageToken ?? "",
          },
          o,
        ),
      call,
    );
    return { jobs: res.jobs.map(toJobInfo), nextPageToken: res.nextPageToken };
  }

  /** Counts per state for the named queues (every queue when none). */
  async getQueueStats(queues: string[] = [], call: CallOptions = {}): Promise<QueueStatsInfo[]> {
    const res = await this.call((o) => this.admin.getQueueStats({ queues }, o), call);
    return res.queues.map(toQueueStats);
  }

  /** Sets a queue's defaults; fields left out keep the broker defaults. */
  async setQueueConfig(queue: string, cfg: QueueConfig, call: CallOptions = {}): Promise<void> {
    await this.call(
      (o) =>
        this.admin.setQueueConfig(
          {
            queue,
            ...(cfg.retry ? { retry: buildRetryPolicy(cfg.retry) } : {}),
            ...(cfg.maxAttempts !== undefined ? { maxAttempts: cfg.maxAttempts } : {}),
            ...(cfg.leaseDurationMs !== undefined ? { leaseDuration: msToDuration(cfg.leaseDurationMs) } : {}),
            ...(cfg.completedRetentionMs !== undefined ? { completedRetention: msToDuration(cfg.completedRetentionMs) } : {}),
          },
          o,
        ),
      call,
    );
  }

  /** Closes the HTTP/2 connection. Calls in flight fail. */
  close(): void {
    this.owned.close();
  }

  /** Runs one RPC with this client's deadline and retry policy. */
  call<T>(fn: (o: { timeoutMs: number; signal?: AbortSignal }) => Promise<T>, call: CallOptions = {}): Promise<T> {
    const merged: CallOptions = { ...call };
    if (merged.timeoutMs === undefined && this.timeoutMs !== undefined) merged.timeoutMs = this.timeoutMs;
    return withRetry(fn, merged, this.retry);
  }
}

async function* encodedJobs(responses: AsyncIterable<LeaseResponse>): AsyncIterable<Uint8Array[]> {
  for await (const res of responses) yield res.jobs.map((j) => encodeLeasedJob(j));
}

/** Builds the protobuf JobSpec for one job; exported for tests and tools. */
export function buildJobSpec(j: JobToEnqueue & { queue: string }): JobSpec {
  return jobSpec(j, j.queue, j.headers ?? {});
}

function jobSpec(j: JobToEnqueue, queue: string, headers: Record<string, string>): JobSpec {
  if (j.runAt !== undefined && j.delayMs !== undefined) {
    throw new RangeError("set at most one of runAt and delayMs");
  }
  const { bytes, contentType } = encodePayload(j.payload, j.contentType);
  // A literal rather than create(JobSpecSchema, ...), which copies each
  // field by reflection: the same object, at a fraction of the cost.
  const spec: JobSpec = {
    $typeName: "jobwire.v1.JobSpec",
    queue,
    type: j.type,
    payload: bytes,
    contentType,
    schedule: { case: undefined },
    priority: j.priority ?? 0,
    idempotencyKey: j.idempotencyKey ?? "",
    headers,
    concurrencyKey: "",
    orderingKey: "",
  };
  if (j.runAt !== undefined) spec.schedule = { case: "runAt", value: dateToTimestamp(j.runAt) };
  if (j.delayMs !== undefined) spec.schedule = { case: "delay", value: msToDuration(j.delayMs) };
  if (j.maxAttempts !== undefined) spec.maxAttempts = j.maxAttempts;
  if (j.leaseDurationMs !== undefined) spec.leaseDuration = msToDuration(j.leaseDurationMs);
  if (j.retry !== undefined) spec.retry = buildRetryPolicy(j.retry);
  if (j.idempotencyTtlMs !== undefined) spec.idempotencyTtl = msToDuration(j.idempotencyTtlMs);
  return spec;
}

function buildRetryPolicy(r: JobRetryPolicy) {
  const p = create(RetryPolicySchema, { multiplier: r.multiplier ?? 0 });
  if (r.initialBackoffMs !== undefined) p.initialBackoff = msToDuration(r.initialBackoffMs);
  if (r.maxBackoffMs !== undefined) p.maxBackoff = msToDuration(r.maxBackoffMs);
  if (r.jitter !== undefined) p.jitter = r.jitter;
  return p;
}

function requireJob(job: Job | undefined, id: string): JobInfo {
  if (job === undefined) throw new NotFoundError(Code.NotFound, `job ${id} not found`);
  return toJobInfo(job);
}

/** Converts the protobuf Job into a JobInfo. */
export function toJobInfo(j: Job): JobInfo {
  return {
    id: j.id,
    queue: j.queue,
    type: j.type,
    payload: j.payload,
    contentType: j.contentType,
    state: stateName(j.state),
    priority: j.priority,
    attempt: j.attempt,
    maxAttempts: j.maxAttempts,
    runAt: timestampToDate(j.runAt),
    createdAt: timestampToDate(j.createdAt),
    finishedAt: timestampToDate(j.finishedAt),
    headers: { ...j.headers },
    idempotencyKey: j.idempotencyKey,
    errors: j.errors.map((e) => ({
      attempt: e.attempt,
      message: e.message,
      at: timestampToDate(e.at),
      workerId: e.workerId,
    })),
    leaseExpiresAt: timestampToDate(j.leaseExpiresAt),
    cancelRequested: j.cancelRequested,
    leaseDurationMs: durationToMs(j.leaseDuration),
    workerId: j.workerId,
  };
}

function toQueueStats(q: QueueStats): QueueStatsInfo {
  return {
    queue: q.queue,
    scheduled: Number(q.scheduled),
    available: Number(q.available),
    running: Number(q.running),
    retryable: Number(q.retryable),
    completed: Number(q.completed),
    dead: Number(q.dead),
    cancelled: Number(q.cancelled),
    oldestAvailableAgeMs: durationToMs(q.oldestAvailableAge) ?? 0,
  };
}

/** Decodes a job's payload: JSON for JSON content types, bytes otherwise. */
export function decodeJobPayload<T = unknown>(job: Pick<JobInfo, "payload" | "contentType">): T {
  return decodePayload(job.payload, job.contentType) as T;
}
