import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { JobSchema, JobState as PbJobState, type Job as PbJob, type JobSpec, type RetryPolicy as PbRetryPolicy } from "@jobwire/proto/jobwire/v1/job_pb";
import { invalid } from "../errors.js";
import type { Job, JobState, NewJob, RetryPolicy } from "../model.js";

/** Protobuf in, plain domain types out (and back). No logic beyond shape. */

const STATE_TO_PB: Record<JobState, PbJobState> = {
  scheduled: PbJobState.SCHEDULED,
  available: PbJobState.AVAILABLE,
  running: PbJobState.RUNNING,
  retryable: PbJobState.RETRYABLE,
  completed: PbJobState.COMPLETED,
  dead: PbJobState.DEAD,
  cancelled: PbJobState.CANCELLED,
};
const PB_TO_STATE = new Map<PbJobState, JobState>(
  (Object.entries(STATE_TO_PB) as [JobState, PbJobState][]).map(([k, v]) => [v, k]),
);

export function stateToPb(s: JobState): PbJobState {
  return STATE_TO_PB[s];
}

export function stateFromPb(field: string, s: PbJobState): JobState {
  const st = PB_TO_STATE.get(s);
  if (!st) throw invalid(field, `${s} is not a job state`);
  return st;
}

/** Duration to ms; a negative duration passes through for the domain to reject with its field name. */
export function durationMs(d: Duration | undefined): number | null {
  if (!d) return null;
  return Number(d.seconds) * 1000 + d.nanos / 1e6;
}

export function msToDuration(ms: number): { seconds: bigint; nanos: number } {
  const whole = Math.floor(ms / 1000);
  return { seconds: BigInt(whole), nanos: Math.round((ms - whole * 1000) * 1e6) };
}

export function ts(d: Date | null | undefined): Timestamp | undefined {
  return d ? timestampFromDate(d) : undefined;
}

export function dateOf(field: string, t: Timestamp | undefined): Date | null {
  if (!t) return null;
  const d = timestampDate(t);
  if (Number.isNaN(d.getTime())) throw invalid(field, "is not a valid time");
  return d;
}

export function retryFromPb(p: PbRetryPolicy | undefined): RetryPolicy | null {
  if (!p) return null;
  const out: RetryPolicy = {};
  const initial = durationMs(p.initialBackoff);
  const max = durationMs(p.maxBackoff);
  if (initial !== null) out.initialMs = initial;
  if (max !== null) out.maxMs = max;
  if (p.multiplier !== 0) out.multiplier = p.multiplier;
  if (p.jitter !== undefined) out.jitter = p.jitter;
  return out;
}

export function retryToPb(p: RetryPolicy): { initialBackoff?: ReturnType<typeof msToDuration>; maxBackoff?: ReturnType<typeof msToDuration>; multiplier: number; jitter?: number } {
  return {
    initialBackoff: p.initialMs === undefined ? undefined : msToDuration(p.initialMs),
    maxBackoff: p.maxMs === undefined ? undefined : msToDuration(p.maxMs),
    multiplier: p.multiplier ?? 0,
    jitter: p.jitter,
  };
}

export function specFromPb(s: JobSpec, i: number): NewJob {
  return {
    queue: s.queue,
    type: s.type,
    payload: s.payload,
    contentType: s.contentType,
    runAt: s.schedule.case === "runAt" ? dateOf(`jobs[${i}].run_at`, s.schedule.value) : null,
    delayMs: s.schedule.case === "delay" ? durationMs(s.schedule.value) : null,
    priority: s.priority,
    maxAttempts: s.maxAttempts ?? null,
    leaseMs: durationMs(s.leaseDuration),
    retry: retryFromPb(s.retry),
    idempotencyKey: s.idempotencyKey || null,
    idempotencyTtlMs: durationMs(s.idempotencyTtl),
    headers: s.headers,
    concurrencyKey: null,
    orderingKey: null,
  };
}

export function jobToPb(j: Job): PbJob {
  return create(JobSchema, {
    id: j.id,
    queue: j.queue,
    type: j.type,
    payload: j.payload,
    contentType: j.contentType,
    state: stateToPb(j.state),
    priority: j.priority,
    attempt: j.attempt,
    maxAttempts: j.maxAttempts,
    runAt: ts(j.runAt),
    createdAt: ts(j.createdAt),
    finishedAt: ts(j.finishedAt),
    headers: j.headers,
    idempotencyKey: j.idempotencyKey ?? "",
    errors: j.errors.map((e) => ({ attempt: e.attempt, message: e.message, at: ts(e.at), workerId: e.workerId })),
    leaseExpiresAt: ts(j.leaseExpiresAt),
    cancelRequested: j.cancelRequested,
    leaseDuration: j.leaseMs === null ? undefined : msToDuration(j.leaseMs),
    workerId: j.workerId ?? "",
    concurrencyKey: j.concurrencyKey ?? "",
    orderingKey: j.orderingKey ?? "",
    errorsDropped: j.errorsDropped,
  });
}

export { approxJobBytes } from "../broker/size.js";
