/**
 * The broker's vocabulary, shared by every layer. No logic lives here.
 *
 * The job state machine (docs/state-machine.md has the picture):
 *
 *   enqueue ──► scheduled ──(run_at due)──► available ◄──(backoff due)── retryable
 *      │                                       │  ▲                          ▲
 *      └──────────(due now)────────────────────┘  │ replay                   │ nack / lease expired
 *                                              lease│ (dead, cancelled)       │ (attempts left)
 *                                                  ▼  │                       │
 *                                               running ──────────────────────┘
 *                                      ack │   │ nack permanent / out of attempts / lease expired at the last attempt
 *                                          ▼   ▼
 *                                 completed   dead
 *
 *   cancel: scheduled | available | retryable ──► cancelled
 *           running ──► running with cancel_requested; its next nack or expiry ──► cancelled
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
  /** Acked. Final. */
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
}

/** A validated job to insert. Times are relative to the database clock. */
export interface NewJob {
  queue: string;
  type: string;
  payload: Uint8Array;
  contentType: string;
  /** Absolute due time, or null to use delayMs. */
  runAt: Date | null;
  /** Due this long after the database's now(); 0 = now. */
  delayMs: number;
  priority: number;
  /** null = the queue's setting, then the default. */
  maxAttempts: number | null;
  leaseMs: number | null;
  retry: RetryPolicy | null;
  idempotencyKey: string | null;
  idempotencyTtlMs: number;
  headers: Record<string, string>;
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

export interface QueueConfig {
  queue: string;
  maxAttempts: number | null;
  leaseMs: number | null;
  retry: RetryPolicy | null;
  /** How long completed jobs stay as history; 0 deletes them at ack; null: the broker's default. */
  completedRetentionMs: number | null;
}

export interface QueueStats {
  queue: string;
  counts: Record<JobState, number>;
  oldestAvailableAgeMs: number;
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
  states: JobState[];
  beforeId: string | null;
  limit: number;
}
