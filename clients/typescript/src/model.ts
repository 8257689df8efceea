/**
 * Jobs with plain JavaScript types: what a producer sends (JobToEnqueue,
 * turned into the protobuf JobSpec here) and what the broker reports
 * (JobInfo, from the protobuf Job). Durations are milliseconds, timestamps
 * Dates, and a field the broker left unset is undefined.
 */
import { create } from "@bufbuild/protobuf";
import { type Job, type JobSpec, type RetryPolicy, RetryPolicySchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { type JobStateName, dateToTimestamp, durationToMs, msToDuration, stateName, timestampToDate } from "./convert.js";
import { decodePayload, encodePayload } from "./payload.js";

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
  /**
   * Groups jobs for the queue's per-key limits (QueueConfig.maxRunningPerKey,
   * rateLimitPerKey), for example "tenant:42". Keys share the workers
   * fairly: one key's backlog does not hold back another's jobs.
   */
  concurrencyKey?: string;
  /**
   * Jobs of one queue with the same ordering key run one at a time, in
   * enqueue order (runAt, then id). A job waiting for its retry keeps the
   * key, so the next one does not overtake it; a job that completes, dies
   * or is cancelled releases it.
   */
  orderingKey?: string;
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
  concurrencyKey: string;
  orderingKey: string;
  /** Failed attempts the broker kept, oldest first. */
  errors: JobErrorInfo[];
  /** Failed attempts left out of `errors` to keep the history bounded. */
  errorsDropped: number;
  leaseExpiresAt: Date | undefined;
  cancelRequested: boolean;
  leaseDurationMs: number | undefined;
  workerId: string;
}

/** Builds the protobuf JobSpec for one job; exported for tests and tools. */
export function buildJobSpec(j: JobToEnqueue & { queue: string }): JobSpec {
  return jobSpec(j, j.queue, j.headers ?? {});
}

export function jobSpec(j: JobToEnqueue, queue: string, headers: Record<string, string>): JobSpec {
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
    concurrencyKey: j.concurrencyKey ?? "",
    orderingKey: j.orderingKey ?? "",
  };
  if (j.runAt !== undefined) spec.schedule = { case: "runAt", value: dateToTimestamp(j.runAt) };
  if (j.delayMs !== undefined) spec.schedule = { case: "delay", value: msToDuration(j.delayMs) };
  if (j.maxAttempts !== undefined) spec.maxAttempts = j.maxAttempts;
  if (j.leaseDurationMs !== undefined) spec.leaseDuration = msToDuration(j.leaseDurationMs);
  if (j.retry !== undefined) spec.retry = buildRetryPolicy(j.retry);
  if (j.idempotencyTtlMs !== undefined) spec.idempotencyTtl = msToDuration(j.idempotencyTtlMs);
  return spec;
}

export function buildRetryPolicy(r: JobRetryPolicy): RetryPolicy {
  const p = create(RetryPolicySchema, { multiplier: r.multiplier ?? 0 });
  if (r.initialBackoffMs !== undefined) p.initialBackoff = msToDuration(r.initialBackoffMs);
  if (r.maxBackoffMs !== undefined) p.maxBackoff = msToDuration(r.maxBackoffMs);
  if (r.jitter !== undefined) p.jitter = r.jitter;
  return p;
}

/** The policy as plain values; fields the broker left unset are absent. */
export function toRetryPolicy(p: RetryPolicy): JobRetryPolicy {
  const out: JobRetryPolicy = {};
  const initial = durationToMs(p.initialBackoff);
  const max = durationToMs(p.maxBackoff);
  if (initial !== undefined) out.initialBackoffMs = initial;
  if (max !== undefined) out.maxBackoffMs = max;
  if (p.multiplier !== 0) out.multiplier = p.multiplier;
  if (p.jitter !== undefined) out.jitter = p.jitter;
  return out;
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
    concurrencyKey: j.concurrencyKey,
    orderingKey: j.orderingKey,
    errors: j.errors.map((e) => ({
      attempt: e.attempt,
      message: e.message,
      at: timestampToDate(e.at),
      workerId: e.workerId,
    })),
    errorsDropped: j.errorsDropped,
    leaseExpiresAt: timestampToDate(j.leaseExpiresAt),
    cancelRequested: j.cancelRequested,
    leaseDurationMs: durationToMs(j.leaseDuration),
    workerId: j.workerId,
  };
}

/** Decodes a job's payload: JSON for JSON content types, bytes otherwise. */
export function decodeJobPayload<T = unknown>(job: Pick<JobInfo, "payload" | "contentType">): T {
  return decodePayload(job.payload, job.contentType) as T;
}
