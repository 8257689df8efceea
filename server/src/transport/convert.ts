import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { QueueConfigSchema, RateLimit as PbRateLimit, SetQueueConfigRequest } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { timestampDate, timestampFromDate, type Duration, type Timestamp } from "@bufbuild/protobuf/wkt";
import { JobSchema, JobState as PbJobState, type Job as PbJob, type JobSpec, type RetryPolicy as PbRetryPolicy } from "@jobwire/proto/jobwire/v1/job_pb";
import { checkTime } from "../broker/validate.js";
import { invalid } from "../errors.js";
import {
  QUEUE_SETTINGS,
  type Job,
  type JobState,
  type NewJob,
  type QueueConfig,
  type QueueConfigChange,
  type QueueSetting,
  type QueueSettings,
  type RateLimit,
  type RetryPolicy,
} from "../model.js";

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

/** A Timestamp within years 1 to 9999 (what Postgres and Date both hold), or INVALID_ARGUMENT naming the field. */
export function dateOf(field: string, t: Timestamp | undefined): Date | null {
  if (!t) return null;
  return checkTime(field, timestampDate(t));
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
    concurrencyKey: s.concurrencyKey || null,
    orderingKey: s.orderingKey || null,
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

export function rateFromPb(r: PbRateLimit | undefined): RateLimit | null {
  if (!r) return null;
  return { count: r.count, periodMs: durationMs(r.period) ?? 0 };
}

/** The request fields of SetQueueConfig, by update_mask path, and the setting each is. */
export const QUEUE_CONFIG_PATHS: Record<string, QueueSetting> = {
  retry: "retry",
  max_attempts: "maxAttempts",
  lease_duration: "leaseMs",
  completed_retention: "completedRetentionMs",
  max_running: "maxRunning",
  max_running_per_key: "maxRunningPerKey",
  rate_limit: "rateLimit",
  rate_limit_per_key: "rateLimitPerKey",
};

/**
 * SetQueueConfigRequest to a change. Without update_mask, the fields
 * present in the request change; with it, exactly the named fields change,
 * and a named field left unset is cleared.
 */
export function queueChangeFromPb(req: SetQueueConfigRequest): QueueConfigChange {
  const values: QueueSettings = {
    retry: retryFromPb(req.retry),
    maxAttempts: req.maxAttempts ?? null,
    leaseMs: durationMs(req.leaseDuration),
    completedRetentionMs: durationMs(req.completedRetention),
    maxRunning: req.maxRunning ?? null,
    maxRunningPerKey: req.maxRunningPerKey ?? null,
    rateLimit: rateFromPb(req.rateLimit),
    rateLimitPerKey: rateFromPb(req.rateLimitPerKey),
  };
  let fields: QueueSetting[];
  if (req.updateMask && req.updateMask.paths.length > 0) {
    fields = req.updateMask.paths.map((p, i) => {
      const f = QUEUE_CONFIG_PATHS[p];
      if (!f) throw invalid(`update_mask.paths[${i}]`, `"${p.slice(0, 60)}" is not a setting; one of ${Object.keys(QUEUE_CONFIG_PATHS).join(", ")}`);
      return f;
    });
  } else {
    const present: Record<QueueSetting, boolean> = {
      retry: req.retry !== undefined,
      maxAttempts: req.maxAttempts !== undefined,
      leaseMs: req.leaseDuration !== undefined,
      completedRetentionMs: req.completedRetention !== undefined,
      maxRunning: req.maxRunning !== undefined,
      maxRunningPerKey: req.maxRunningPerKey !== undefined,
      rateLimit: req.rateLimit !== undefined,
      rateLimitPerKey: req.rateLimitPerKey !== undefined,
    };
    fields = QUEUE_SETTINGS.filter((f) => present[f]);
  }
  return { queue: req.queue, values, fields: [...new Set(fields)] };
}

export function queueConfigToPb(c: QueueConfig): MessageInitShape<typeof QueueConfigSchema> {
  const rate = (r: RateLimit | null) => (r ? { count: r.count, period: msToDuration(r.periodMs) } : undefined);
  return {
    queue: c.queue,
    retry: c.retry ? retryToPb(c.retry) : undefined,
    maxAttempts: c.maxAttempts ?? undefined,
    leaseDuration: c.leaseMs === null ? undefined : msToDuration(c.leaseMs),
    completedRetention: c.completedRetentionMs === null ? undefined : msToDuration(c.completedRetentionMs),
    maxRunning: c.maxRunning ?? undefined,
    maxRunningPerKey: c.maxRunningPerKey ?? undefined,
    rateLimit: rate(c.rateLimit),
    rateLimitPerKey: rate(c.rateLimitPerKey),
    paused: c.paused,
    updatedAt: ts(c.updatedAt),
  };
}
