/**
 * The JSON forms (proto3 JSON mapping, as the Connect protocol sends them)
 * of the jobwire.v1 messages the dashboard reads. Zero values are left out
 * of the wire, so every field is optional; int64 arrives as a string,
 * bytes as base64, Timestamp as RFC 3339 text, Duration as "1.5s".
 * Source of truth: proto/jobwire/v1/*.proto.
 */
export type JobState =
  | "JOB_STATE_SCHEDULED"
  | "JOB_STATE_AVAILABLE"
  | "JOB_STATE_RUNNING"
  | "JOB_STATE_RETRYABLE"
  | "JOB_STATE_COMPLETED"
  | "JOB_STATE_DEAD"
  | "JOB_STATE_CANCELLED";

export const STATES: JobState[] = [
  "JOB_STATE_SCHEDULED",
  "JOB_STATE_AVAILABLE",
  "JOB_STATE_RUNNING",
  "JOB_STATE_RETRYABLE",
  "JOB_STATE_COMPLETED",
  "JOB_STATE_DEAD",
  "JOB_STATE_CANCELLED",
];

export interface JobError {
  attempt?: number;
  message?: string;
  at?: string;
  workerId?: string;
}

export interface Job {
  id?: string;
  queue?: string;
  type?: string;
  payload?: string;
  contentType?: string;
  state?: JobState;
  priority?: number;
  attempt?: number;
  maxAttempts?: number;
  runAt?: string;
  createdAt?: string;
  finishedAt?: string;
  headers?: Record<string, string>;
  idempotencyKey?: string;
  errors?: JobError[];
  leaseExpiresAt?: string;
  cancelRequested?: boolean;
  leaseDuration?: string;
  workerId?: string;
  concurrencyKey?: string;
  orderingKey?: string;
  errorsDropped?: number;
}

export interface QueueStats {
  queue?: string;
  scheduled?: string;
  available?: string;
  running?: string;
  retryable?: string;
  completed?: string;
  dead?: string;
  cancelled?: string;
  oldestAvailableAge?: string;
  paused?: boolean;
}

export interface QueueSample {
  at?: string;
  queue?: string;
  available?: string;
  waiting?: string;
  running?: string;
  dead?: string;
  enqueued?: string;
  completed?: string;
  failed?: string;
}

export interface WorkerStream {
  workerId?: string;
  queues?: string[];
  maxInFlight?: number;
  credit?: number;
  jobsHeld?: number;
  connectedAt?: string;
  brokerId?: string;
  peer?: string;
}

export interface Schedule {
  name?: string;
  cron?: string;
  job?: { queue?: string; type?: string };
  paused?: boolean;
  nextRunAt?: string;
  lastRunAt?: string;
  lastJobId?: string;
}

export interface QueueConfig {
  queue?: string;
  paused?: boolean;
}

export interface ReplayFilter {
  queue: string;
  type?: string;
  errorContains?: string;
}

/** Each RPC's request and response, by service and method name. */
export interface Rpcs {
  "AdminService/ListJobs": [
    { queue?: string; type?: string; states?: JobState[]; pageSize?: number; pageToken?: string; errorContains?: string },
    { jobs?: Job[]; nextPageToken?: string; sizeLimited?: boolean },
  ];
  "AdminService/GetQueueStats": [{ queues?: string[] }, { queues?: QueueStats[] }];
  "AdminService/GetQueueHistory": [{ queue?: string }, { samples?: QueueSample[]; interval?: string }];
  "AdminService/ListWorkers": [{ queue?: string }, { workers?: WorkerStream[] }];
  "AdminService/ListSchedules": [Record<string, never>, { schedules?: Schedule[] }];
  "AdminService/Replay": [
    { jobIds?: string[]; filter?: ReplayFilter; dryRun?: boolean; includeCancelled?: boolean },
    { replayed?: number; jobIds?: string[] },
  ];
  "AdminService/PauseQueue": [{ queue: string }, { config?: QueueConfig }];
  "AdminService/ResumeQueue": [{ queue: string }, { config?: QueueConfig }];
  "AdminService/WhoAmI": [Record<string, never>, { authEnabled?: boolean; name?: string; scopes?: string[]; queues?: string[] }];
  "JobService/GetJob": [{ id: string }, { job?: Job }];
  "JobService/CancelJob": [{ id: string }, { job?: Job }];
}

/** GET /dashboard/config.json */
export interface DashboardConfig {
  authEnabled: boolean;
  traceUrl: string;
}
