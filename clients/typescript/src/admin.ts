/**
 * The operator's side of the API with plain JavaScript types: queue
 * configuration (partial updates), pause and resume, queue counts and
 * history, the connected workers, and who the caller is. JobwireClient's
 * methods call these converters; the names follow the Go and Python
 * clients (QueueConfig, RateLimit, WorkerStream, QueueStats).
 */
import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import type {
  GetQueueHistoryResponse,
  QueueConfig as PbQueueConfig,
  QueueStats as PbQueueStats,
  RateLimit as PbRateLimit,
  SetQueueConfigRequest,
  WhoAmIResponse,
  WorkerStream as PbWorkerStream,
} from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { durationToMs, msToDuration, timestampToDate } from "./convert.js";
import { type JobRetryPolicy, buildRetryPolicy, toRetryPolicy } from "./model.js";

/**
 * At most `count` job starts in any window of `periodMs`, across every
 * broker replica. A job held back waits as AVAILABLE: it is not failed and
 * no attempt is charged.
 */
export interface RateLimit {
  /** 1 to 1,000,000. */
  count: number;
  /** 1 ms to 24 h. */
  periodMs: number;
}

/** A queue's settings as the broker holds them. An absent setting is unset, and the broker's default applies. */
export interface QueueConfig {
  queue: string;
  /** The queue's retry policy; a job's own policy wins field by field. */
  retry?: JobRetryPolicy;
  maxAttempts?: number;
  /** The lease of jobs that ask for none. */
  leaseDurationMs?: number;
  /** How long completed jobs stay as history; 0 deletes them at ack. Unset: the broker's (24 h). */
  completedRetentionMs?: number;
  /** The most RUNNING jobs of the queue at once, across every worker and replica. */
  maxRunning?: number;
  /** The most RUNNING jobs at once per concurrencyKey. Jobs without a key are limited only by maxRunning. */
  maxRunningPerKey?: number;
  /** How many of the queue's jobs may start per period. */
  rateLimit?: RateLimit;
  /** How many jobs may start per period for each concurrencyKey. */
  rateLimitPerKey?: RateLimit;
  /** Set by pauseQueue, cleared by resumeQueue. */
  paused: boolean;
  /** The last change; undefined when the queue was never configured. */
  updatedAt?: Date;
}

/**
 * A change to a queue's settings, for setQueueConfig. A setting given a
 * value is set; a setting given `null` is cleared (back to the broker's
 * default); a setting left out keeps its value, so setting one never
 * clears another.
 *
 *   await client.setQueueConfig("emails", { maxRunning: 5 });        // the rest stays
 *   await client.setQueueConfig("emails", { maxRunning: null });     // unlimited again
 */
export type QueueConfigUpdate = {
  [K in QueueSetting]?: Exclude<QueueConfig[K], undefined> | null;
};

/** The settings setQueueConfig can change, by their names here. */
export type QueueSetting =
  | "retry"
  | "maxAttempts"
  | "leaseDurationMs"
  | "completedRetentionMs"
  | "maxRunning"
  | "maxRunningPerKey"
  | "rateLimit"
  | "rateLimitPerKey";

/** Each setting's update_mask path, as the proto names the field. */
const MASK_PATHS: Record<QueueSetting, string> = {
  retry: "retry",
  maxAttempts: "max_attempts",
  leaseDurationMs: "lease_duration",
  completedRetentionMs: "completed_retention",
  maxRunning: "max_running",
  maxRunningPerKey: "max_running_per_key",
  rateLimit: "rate_limit",
  rateLimitPerKey: "rate_limit_per_key",
};

/**
 * Builds the SetQueueConfig request. With nothing cleared it carries only
 * the settings given, and the broker keeps the others. When a setting is
 * cleared it also carries an update_mask naming every setting given, set
 * or cleared, because with a mask the broker changes exactly the named
 * fields (and clears those left unset). The Go and Python clients build
 * the same requests.
 */
export function setQueueConfigRequest(queue: string, u: QueueConfigUpdate): Omit<SetQueueConfigRequest, "$typeName"> {
  const req: Omit<SetQueueConfigRequest, "$typeName"> = { queue };
  const paths: string[] = [];
  let clears = false;
  for (const key of Object.keys(u) as (keyof QueueConfigUpdate)[]) {
    const path = Object.hasOwn(MASK_PATHS, key) ? MASK_PATHS[key] : undefined;
    if (path === undefined) throw new TypeError(`setQueueConfig: "${String(key)}" is not a queue setting; one of ${Object.keys(MASK_PATHS).join(", ")}`);
    const v = u[key];
    if (v === undefined) continue;
    paths.push(path);
    if (v === null) {
      clears = true;
      continue;
    }
    switch (key) {
      case "retry":
        req.retry = buildRetryPolicy(v as JobRetryPolicy);
        break;
      case "maxAttempts":
      case "maxRunning":
      case "maxRunningPerKey":
        req[key] = v as number;
        break;
      case "leaseDurationMs":
        req.leaseDuration = msToDuration(v as number);
        break;
      case "completedRetentionMs":
        req.completedRetention = msToDuration(v as number);
        break;
      case "rateLimit":
      case "rateLimitPerKey":
        req[key] = rateLimitToPb(v as RateLimit);
        break;
    }
  }
  if (clears) req.updateMask = create(FieldMaskSchema, { paths });
  return req;
}

function rateLimitToPb(r: RateLimit): PbRateLimit {
  return { $typeName: "jobwire.v1.RateLimit", count: r.count, period: msToDuration(r.periodMs) };
}

function toRateLimit(r: PbRateLimit | undefined): RateLimit | undefined {
  return r === undefined ? undefined : { count: r.count, periodMs: durationToMs(r.period) ?? 0 };
}

export function toQueueConfig(p: PbQueueConfig | undefined, queue: string): QueueConfig {
  if (p === undefined) return { queue, paused: false };
  const out: QueueConfig = { queue: p.queue || queue, paused: p.paused };
  if (p.retry !== undefined) out.retry = toRetryPolicy(p.retry);
  if (p.maxAttempts !== undefined) out.maxAttempts = p.maxAttempts;
  const lease = durationToMs(p.leaseDuration);
  if (lease !== undefined) out.leaseDurationMs = lease;
  const retention = durationToMs(p.completedRetention);
  if (retention !== undefined) out.completedRetentionMs = retention;
  if (p.maxRunning !== undefined) out.maxRunning = p.maxRunning;
  if (p.maxRunningPerKey !== undefined) out.maxRunningPerKey = p.maxRunningPerKey;
  const rate = toRateLimit(p.rateLimit);
  if (rate !== undefined) out.rateLimit = rate;
  const ratePerKey = toRateLimit(p.rateLimitPerKey);
  if (ratePerKey !== undefined) out.rateLimitPerKey = ratePerKey;
  const updated = timestampToDate(p.updatedAt);
  if (updated !== undefined) out.updatedAt = updated;
  return out;
}

/** How many of a queue's jobs are in each state, and whether it is paused. */
export interface QueueStats {
  queue: string;
  scheduled: number;
  available: number;
  running: number;
  retryable: number;
  completed: number;
  dead: number;
  cancelled: number;
  /** How long the oldest AVAILABLE job has been due; 0 when none waits. */
  oldestAvailableAgeMs: number;
  /** Set by pauseQueue: no broker replica leases the queue's jobs. */
  paused: boolean;
}

export function toQueueStats(q: PbQueueStats): QueueStats {
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
    paused: q.paused,
  };
}

/** One open Lease stream, as the broker replica serving it sees it. */
export interface WorkerStream {
  /** The id the worker opened the stream with (WorkerOptions.workerId). */
  workerId: string;
  queues: string[];
  maxInFlight: number;
  /** Jobs the broker may still send on the stream. */
  credit: number;
  /** Jobs sent on the stream whose credit has not come back yet. */
  jobsHeld: number;
  connectedAt: Date | undefined;
  /** The broker replica serving the stream. */
  brokerId: string;
  /** The worker's address as that broker sees it. */
  peer: string;
}

export function toWorkerStream(w: PbWorkerStream): WorkerStream {
  return {
    workerId: w.workerId,
    queues: [...w.queues],
    maxInFlight: w.maxInFlight,
    credit: w.credit,
    jobsHeld: w.jobsHeld,
    connectedAt: timestampToDate(w.connectedAt),
    brokerId: w.brokerId,
    peer: w.peer,
  };
}

/** One queue at one moment, with the counts of the interval that ended then. */
export interface QueueSample {
  at: Date | undefined;
  queue: string;
  /** Jobs AVAILABLE at `at`. */
  available: number;
  /** Jobs SCHEDULED or RETRYABLE at `at`. */
  waiting: number;
  running: number;
  dead: number;
  /** Jobs enqueued, completed (acked) and failed (attempts) in the interval. */
  enqueued: number;
  completed: number;
  failed: number;
}

export interface QueueHistory {
  /** Oldest first. */
  samples: QueueSample[];
  /** The time between two samples. */
  intervalMs: number;
}

export function toQueueHistory(res: GetQueueHistoryResponse): QueueHistory {
  return {
    samples: res.samples.map((s) => ({
      at: timestampToDate(s.at),
      queue: s.queue,
      available: Number(s.available),
      waiting: Number(s.waiting),
      running: Number(s.running),
      dead: Number(s.dead),
      enqueued: Number(s.enqueued),
      completed: Number(s.completed),
      failed: Number(s.failed),
    })),
    intervalMs: durationToMs(res.interval) ?? 0,
  };
}

/** The caller as the broker sees it (AdminService.WhoAmI). */
export interface WhoAmI {
  /** False when the broker runs without authentication (every call allowed). */
  authEnabled: boolean;
  /** The token's name, or the client certificate's subject. */
  name: string;
  /** Of "enqueue", "work", "read", "admin". */
  scopes: string[];
  /** Queue name patterns the caller may touch ("*" for all). */
  queues: string[];
}

export function toWhoAmI(r: WhoAmIResponse): WhoAmI {
  return { authEnabled: r.authEnabled, name: r.name, scopes: [...r.scopes], queues: [...r.queues] };
}
