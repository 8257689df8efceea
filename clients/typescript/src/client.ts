import { type Client, Code, type Transport, createClient } from "@connectrpc/connect";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import type { Job, JobSpec } from "@jobwire/proto/jobwire/v1/job_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { encodeLeasedJob } from "@jobwire/proto/fast/jobwire/v1/worker_service_fast";
import { type LeaseResponse, WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import type { Span } from "@opentelemetry/api";
import {
  type QueueConfig,
  type QueueConfigUpdate,
  type QueueHistory,
  type QueueStats,
  type WhoAmI,
  type WorkerStream,
  setQueueConfigRequest,
  toQueueConfig,
  toQueueHistory,
  toQueueStats,
  toWhoAmI,
  toWorkerStream,
} from "./admin.js";
import { type JobStateName, dateToTimestamp, stateFromName } from "./convert.js";
import { NotFoundError } from "./errors.js";
import { Brokers, parseAddresses } from "./failover.js";
import { type Logger, consoleLogger } from "./logger.js";
import { type EnqueueOptions, type EnqueueResult, type JobInfo, type JobToEnqueue, jobSpec, toJobInfo } from "./model.js";
import { type CallOptions, type RetryOptions, withRetry } from "./retry.js";
import { ATTR, SpanStatusCode, context, errorMessage, startProducerSpan, trace } from "./tracing.js";
import { type LeaseBatches, type TransportOptions, createTransport } from "./transport.js";

export {
  buildJobSpec,
  decodeJobPayload,
  toJobInfo,
  type EnqueueOptions,
  type EnqueueResult,
  type JobErrorInfo,
  type JobInfo,
  type JobRetryPolicy,
  type JobToEnqueue,
} from "./model.js";

/** The queue jobs go to when the caller names none. */
export const DEFAULT_QUEUE = "default";

export interface ClientOptions extends TransportOptions {
  /**
   * The broker: "http://host:port", "https://host:port", "host:port" (https
   * when `tls` is given). Default JOBWIRE_ADDRESS, then http://127.0.0.1:50051.
   *
   * For broker replicas on one database, give several, as an array or
   * separated by commas ("http://10.0.0.1:50051,http://10.0.0.2:50051"), or
   * one host name with a DNS record per replica. Calls go to the first
   * broker until it fails, then to the next (see failover.ts).
   */
  address?: string | readonly string[];
  /** Queue used when enqueue options name none. Default "default". */
  defaultQueue?: string;
  /** Deadline for each call (retries included) unless the call sets one. Default 10s. */
  timeoutMs?: number;
  /**
   * How calls answered UNAVAILABLE are retried: each try goes round every
   * broker once, then waits. Default 5 tries, 100ms..5s jittered.
   */
  retry?: RetryOptions;
  /**
   * Use this connect-es transport instead of opening HTTP/2 connections to
   * `address` (for interceptors, or an in-memory broker in tests). There is
   * no failover then.
   */
  transport?: Transport;
  /** Where failovers are logged. Default console. */
  logger?: Logger;
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
  /** Jobs whose last error contains this text (case-sensitive). */
  errorContains?: string;
  pageSize?: number;
  pageToken?: string;
}

/**
 * JobwireClient is the producer's and operator's handle on a broker:
 * enqueue jobs, look them up, cancel and replay them, and manage queues.
 * Every call has a deadline and retries UNAVAILABLE answers (on the next
 * broker at once when it was given several, then with jittered backoff);
 * failures reject with a JobwireError whose message starts with the code
 * (see errors.ts).
 *
 * Enqueue retries are safe to repeat only with an idempotency key: without
 * one, a retry after a connection that broke mid-call may enqueue twice.
 * Delivery is at least once anyway, so handlers must be idempotent.
 */
export class JobwireClient {
  /** Every broker this client was given, normalized, in order. */
  readonly addresses: readonly string[];
  readonly defaultQueue: string;
  /**
   * The generated connect-es clients, for calls this class does not wrap.
   * Their unary calls fail over like this class's (one try per broker),
   * without the waits between rounds; they reject with ConnectError.
   */
  readonly jobs: Client<typeof JobService>;
  readonly workers: Client<typeof WorkerService>;
  readonly admin: Client<typeof AdminService>;
  /** WorkerService.Lease with each batch's LeasedJobs left encoded, which the Worker reads as views (lease-view.ts). */
  readonly leaseBatches: LeaseBatches;
  private readonly brokers: Brokers | undefined;
  private readonly closeTransport: () => void;
  private readonly timeoutMs: number | undefined;
  private readonly retry: RetryOptions;

  constructor(opts: ClientOptions = {}) {
    this.defaultQueue = opts.defaultQueue ?? DEFAULT_QUEUE;
    let transport: Transport;
    if (opts.transport !== undefined) {
      // Someone else's transport: the Lease stream goes through connect-es, and its jobs are encoded again for the Worker.
      transport = opts.transport;
      const lease = createClient(WorkerService, transport).lease;
      this.leaseBatches = (requests, call) =>
        encodedJobs(lease(requests, { signal: call.signal, timeoutMs: call.timeoutMs, headers: call.header, onHeader: call.onHeader }));
      this.addresses = parseAddresses(typeof opts.address === "string" || Array.isArray(opts.address) ? opts.address : "", opts.tls !== undefined);
      this.closeTransport = () => {};
    } else {
      const urls = parseAddresses(opts.address ?? process.env.JOBWIRE_ADDRESS, opts.tls !== undefined);
      const brokers = new Brokers(urls, (url) => createTransport(url, opts), opts.logger ?? consoleLogger);
      this.brokers = brokers;
      this.addresses = urls;
      transport = brokers.transport();
      this.leaseBatches = brokers.leaseBatches();
      this.closeTransport = () => brokers.close();
    }
    this.jobs = createClient(JobService, transport);
    this.workers = createClient(WorkerService, transport);
    this.admin = createClient(AdminService, transport);
    this.timeoutMs = opts.timeoutMs;
    this.retry = opts.retry ?? {};
  }

  /** The broker calls go to now: the first one given until it fails, then the next. */
  get address(): string {
    return this.brokers?.current().url ?? this.addresses[0]!;
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
    const req = {
      queue: opts.queue ?? "",
      type: opts.type ?? "",
      states: (opts.states ?? []).map(stateFromName),
      errorContains: opts.errorContains ?? "",
      pageSize: opts.pageSize ?? 0,
      pageToken: opts.pageToken ?? "",
    };
    const res = await this.call((o) => this.admin.listJobs(req, o), call);
    return { jobs: res.jobs.map(toJobInfo), nextPageToken: res.nextPageToken };
  }

  /** Counts per state, the oldest waiting job's age, and whether the queue is paused; for the named queues (every queue when none). */
  async getQueueStats(queues: string[] = [], call: CallOptions = {}): Promise<QueueStats[]> {
    const res = await this.call((o) => this.admin.getQueueStats({ queues }, o), call);
    return res.queues.map(toQueueStats);
  }

  /** A queue's whole config. A queue nobody configured has every setting unset (the broker's defaults apply). */
  async getQueueConfig(queue: string, call: CallOptions = {}): Promise<QueueConfig> {
    const res = await this.call((o) => this.admin.getQueueConfig({ queue }, o), call);
    return toQueueConfig(res.config, queue);
  }

  /**
   * Changes some of a queue's settings and returns the whole config. A
   * setting given a value is set, one given null is cleared (back to the
   * broker's default), and the others keep their values:
   *
   *   await client.setQueueConfig("emails", { maxRunning: 5 });
   *   await client.setQueueConfig("emails", { maxRunning: null, maxAttempts: 3 });
   */
  async setQueueConfig(queue: string, changes: QueueConfigUpdate, call: CallOptions = {}): Promise<QueueConfig> {
    const req = setQueueConfigRequest(queue, changes);
    const res = await this.call((o) => this.admin.setQueueConfig(req, o), call);
    return toQueueConfig(res.config, queue);
  }

  /**
   * Stops every broker replica from leasing the queue's jobs, within a
   * second. Enqueues still succeed, and jobs already running finish (their
   * acks, nacks and heartbeats work). Idempotent.
   */
  async pauseQueue(queue: string, call: CallOptions = {}): Promise<QueueConfig> {
    const res = await this.call((o) => this.admin.pauseQueue({ queue }, o), call);
    return toQueueConfig(res.config, queue);
  }

  /** Lets a paused queue's jobs be leased again. Idempotent. */
  async resumeQueue(queue: string, call: CallOptions = {}): Promise<QueueConfig> {
    const res = await this.call((o) => this.admin.resumeQueue({ queue }, o), call);
    return toQueueConfig(res.config, queue);
  }

  /** The open Lease streams on every broker replica: all of them, or those leasing from `queue`. */
  async listWorkers(queue = "", call: CallOptions = {}): Promise<WorkerStream[]> {
    const res = await this.call((o) => this.admin.listWorkers({ queue }, o), call);
    return res.workers.map(toWorkerStream);
  }

  /** Samples over the last hour, oldest first: backlog, and jobs enqueued, completed and failed per interval; for `queue`, or every queue. */
  async getQueueHistory(queue = "", call: CallOptions = {}): Promise<QueueHistory> {
    const res = await this.call((o) => this.admin.getQueueHistory({ queue }, o), call);
    return toQueueHistory(res);
  }

  /** Who the broker takes this client for: its token's (or certificate's) name, scopes and queues. */
  async whoAmI(call: CallOptions = {}): Promise<WhoAmI> {
    const res = await this.call((o) => this.admin.whoAmI({}, o), call);
    return toWhoAmI(res);
  }

  /** Closes the HTTP/2 connections. Calls in flight fail. */
  close(): void {
    this.closeTransport();
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

function requireJob(job: Job | undefined, id: string): JobInfo {
  if (job === undefined) throw new NotFoundError(Code.NotFound, `job ${id} not found`);
  return toJobInfo(job);
}
