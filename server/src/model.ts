/** The broker's vocabulary, shared by every layer. No logic lives here. */

/**
 * Where a job is in its life. docs/state-machine.md is the one description
 * of how a job moves between these states: every transition with its
 * trigger and the statement that makes it, the fencing token, the
 * idempotency key. Update that page with any statement that moves a job.
 */
export type JobState =
  /** Waiting for a run_at in the future. */
  | "scheduled"
  /** Due; waiting for a worker with credit. Only these are claimed. */
  | "available"
  /** Leased to a worker until lease_expires_at; carries a fencing token. */
  | "running"
  /** Failed an attempt and is waiting out its backoff until run_at. */
  | "retryable"
  /** Acked. Final; kept as history until its retention passes (or deleted in the ack when that is 0). */
  | "completed"
  /** Failed permanently or out of attempts. Final until replayed. */
  | "dead"
  /** Cancelled before completion. Final until replayed with include_cancelled. */
  | "cancelled";

export const JOB_STATES: readonly JobState[] = [
  "scheduled",
  "available",
  "running",
  "retryable",
  "completed",
  "dead",
  "cancelled",
];

/** Field-wise retry policy; unset fields fall back to the queue's, then to the defaults. */
export interface RetryPolicy {
  initialMs?: number;
  maxMs?: number;
  multiplier?: number;
  jitter?: number;
}

export interface JobError {
  attempt: number;
  message: string;
  at: Date;
  workerId: string;
}

export interface Job {
  id: string;
  queue: string;
  type: string;
  payload: Uint8Array;
  contentType: string;
  state: JobState;
  priority: number;
  attempt: number;
  maxAttempts: number;
  runAt: Date;
  createdAt: Date;
  finishedAt: Date | null;
  headers: Record<string, string>;
  idempotencyKey: string | null;
  errors: JobError[];
  leaseExpiresAt: Date | null;
  leaseMs: number | null;
  cancelRequested: boolean;
  workerId: string | null;
  concurrencyKey: string | null;
  orderingKey: string | null;
  /** Failed attempts left out of `errors` to keep the history bounded. */
  errorsDropped: number;
}

/**
 * A job to insert, as the transport hands it over and, once validated
 * (broker/validate.ts checkJobSpec), as the store inserts it: durations in
 * milliseconds, null where the caller set nothing. Validation fills in the
 * defaults it owns (content type, idempotency TTL) and leaves the rest null
 * for the store to resolve against the queue's config and the broker's
 * defaults. Times are relative to the database clock.
 */
export interface NewJob {
  queue: string;
  type: string;
  payload: Uint8Array;
  /** "" until validated: then the caller's, or application/json. */
  contentType: string;
  /** Absolute due time; at most one of runAt and delayMs. */
  runAt: Date | null;
  /** Due this long after the database's now(); null with runAt null = now. */
  delayMs: number | null;
  priority: number;
  /** null = the queue's setting, then the default. */
  maxAttempts: number | null;
  leaseMs: number | null;
  retry: RetryPolicy | null;
  /** null = none. */
  idempotencyKey: string | null;
  /** null = the broker's default (filled in by validation when a key is set). */
  idempotencyTtlMs: number | null;
  headers: Record<string, string>;
  /** null = none (JobSpec.concurrency_key). */
  concurrencyKey: string | null;
  /** null = none (JobSpec.ordering_key). */
  orderingKey: string | null;
}

export interface EnqueueResult {
  jobId: string;
  duplicate: boolean;
}

export interface Lease {
  job: Job;
  token: string;
  expiresAt: Date;
}

/** A lease as the store sees it: the row id and the token's random part. */
export interface LeaseRef {
  id: string;
  token: string;
}

/** A job the claim took for a stream; `token` is the lease's random part (see broker/token.ts). */
export interface ClaimedJob {
  job: Job;
  token: string;
  expiresAt: Date;
}

/** A job after a failed attempt (nack or expired lease): where it went, and when it runs next. */
export interface FailedJob {
  id: string;
  queue: string;
  state: JobState;
  runAt: Date;
  headers: Record<string, string>;
  attempt: number;
  /** Its queue's waiting jobs may have been held back for it (limits, an ordering key): wake the queue. */
  wakesQueue: boolean;
}

/** A recurring schedule; `template` is the job it enqueues (no run_at, delay or key). */
export interface Schedule {
  name: string;
  cron: string;
  template: NewJob;
  paused: boolean;
  nextRunAt: Date | null;
  lastRunAt: Date | null;
  lastJobId: string | null;
}

/** One fire of a schedule. */
export interface Fired {
  name: string;
  at: Date;
  result: EnqueueResult;
}

export interface HeartbeatResult {
  token: string;
  lost: boolean;
  expiresAt: Date | null;
  cancelRequested: boolean;
}

export interface NackResult {
  state: JobState;
  runAt: Date;
}

/** At most `count` starts per `periodMs`, a burst of `count` after a quiet period (GCRA: sql/functions/claim_keys.sql). */
export interface RateLimit {
  count: number;
  periodMs: number;
}

/** The settings a queue can be given; null = unset (the broker's default, or unlimited). */
export interface QueueSettings {
  maxAttempts: number | null;
  leaseMs: number | null;
  retry: RetryPolicy | null;
  /** How long completed jobs stay as history; 0 deletes them at ack; null: the broker's default. */
  completedRetentionMs: number | null;
  /** Most RUNNING jobs of the queue at once, across replicas. */
  maxRunning: number | null;
  /** Most RUNNING jobs at once per concurrency key. */
  maxRunningPerKey: number | null;
  rateLimit: RateLimit | null;
  rateLimitPerKey: RateLimit | null;
}

export type QueueSetting = keyof QueueSettings;

export const QUEUE_SETTINGS: readonly QueueSetting[] = [
  "retry",
  "maxAttempts",
  "leaseMs",
  "completedRetentionMs",
  "maxRunning",
  "maxRunningPerKey",
  "rateLimit",
  "rateLimitPerKey",
];

export interface QueueConfig extends QueueSettings {
  queue: string;
  /** Set by PauseQueue: no replica leases the queue's jobs. */
  paused: boolean;
  /** The last change; null for a queue nobody configured. */
  updatedAt: Date | null;
}

/**
 * A change to a queue's settings: exactly the settings in `fields` change,
 * to their value in `values` (a null value clears the setting).
 */
export interface QueueConfigChange {
  queue: string;
  values: QueueSettings;
  fields: QueueSetting[];
}

export interface QueueStats {
  queue: string;
  counts: Record<JobState, number>;
  oldestAvailableAgeMs: number;
  paused: boolean;
}

/** One open Lease stream, on some broker replica (AdminService.ListWorkers). */
export interface WorkerStream {
  brokerId: string;
  workerId: string;
  queues: string[];
  maxInFlight: number;
  /** Jobs the broker may still send on it. */
  credit: number;
  /** Jobs sent whose credit has not come back. */
  held: number;
  connectedAt: Date;
  /** The worker's address as the broker sees it ("" when unknown). */
  peer: string;
}

/** What /metrics reads from the database, cluster-wide (telemetry/metrics.ts). */
export interface QueueGauges {
  /** Every queue that has a config row or a count. */
  queues: string[];
  /** Jobs per queue and state, for the states with a partial index. */
  counts: { queue: string; state: string; n: number }[];
  oldest: { queue: string; seconds: number }[];
  paused: string[];
  /** Open Lease streams per queue, on every replica. */
  workers: Map<string, number>;
  /** Jobs enqueued per queue, by any path. */
  enqueued: Map<string, number>;
  /** Jobs completed, and attempts failed, per queue, through any replica. */
  completed: Map<string, number>;
  failed: Map<string, number>;
}

/** One queue at one moment, with the counts of the interval that ended then (AdminService.GetQueueHistory). */
export interface QueueSample {
  at: Date;
  queue: string;
  available: number;
  waiting: number;
  running: number;
  dead: number;
  enqueued: number;
  completed: number;
  failed: number;
}

export interface ReplayFilter {
  queue: string;
  type: string | null;
  errorContains: string | null;
  finishedAfter: Date | null;
  finishedBefore: Date | null;
}

export interface ListFilter {
  queue: string | null;
  type: string | null;
  /** Jobs whose last error contains this text. */
  errorContains: string | null;
  states: JobState[];
  beforeId: string | null;
  limit: number;
}
