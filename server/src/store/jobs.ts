import type pg from "pg";
import type {
  EnqueueResult,
  FailedJob,
  Job,
  JobState,
  LeaseRef,
  ListFilter,
  NewJob,
  QueueConfig,
  QueueConfigChange,
  QueueStats,
  ReplayFilter,
  WorkerStream,
} from "../model.js";
import { DEFAULT_COMPLETED_RETENTION_MS, DEFAULT_MAX_ATTEMPTS } from "../config.js";
import { query, withTx } from "./db.js";
import * as admin from "./sql/admin.js";
import { claim, type Claim } from "./sql/claim.js";
import { insertJobs, insertUnkeyed } from "./sql/enqueue.js";
import { expiredIds, nack, quarantine, reapExpired, reapOne } from "./sql/fail.js";
import { ack, heartbeat, release, type AckResult } from "./sql/leases.js";
import { msUntilNextDue, promoteDue } from "./sql/promote.js";
import { pruneCompleted } from "./sql/prune.js";
import { getQueueConfig, setPaused, setQueueConfig, writeSettings } from "./sql/queues.js";
import { heartbeatBroker, leaveBrokers, listBrokerStreams, pruneBrokers } from "./sql/brokers.js";
import { foldCounters, readCounters, type CounterRow } from "./sql/counters.js";
import { metricsSnapshot, queueFlags, queueStats, type MetricsSnapshot } from "./sql/stats.js";

/**
 * JobStore: every statement on jobwire.jobs and jobwire.queues, one named
 * query module per operation under store/sql/ (the live SQL functions they
 * call are in server/sql/functions/). Each state transition names the state
 * it starts from (and, for leased jobs, the fencing token), so a stale or
 * repeated write matches no row and changes nothing.
 */

export interface JobStoreOptions {
  /**
   * How long a completed job stays as history when its queue sets no
   * retention of its own; 0 deletes it in the ack.
   */
  completedRetentionMs: number;
  /** JOBWIRE_DEFAULT_MAX_ATTEMPTS: for jobs whose spec and queue set none. */
  defaultMaxAttempts: number;
}

export const DEFAULT_STORE_OPTIONS: JobStoreOptions = {
  completedRetentionMs: DEFAULT_COMPLETED_RETENTION_MS,
  defaultMaxAttempts: DEFAULT_MAX_ATTEMPTS,
};

export class JobStore {
  private readonly opts: JobStoreOptions;

  constructor(
    readonly pool: pg.Pool,
    opts: Partial<JobStoreOptions> = {},
  ) {
    this.opts = { ...DEFAULT_STORE_OPTIONS, ...opts };
  }

  enqueue(jobs: NewJob[]): Promise<EnqueueResult[]> {
    // The common path: no keys, one statement, one round trip.
    if (jobs.every((j) => j.idempotencyKey === null)) return insertUnkeyed(this.pool, jobs, this.opts.defaultMaxAttempts);
    return withTx(this.pool, (c) => insertJobs(c, jobs, this.opts.defaultMaxAttempts));
  }

  claim(queues: string[], limit: number, workerId: string, workerLeaseMs: number | null, defaultLeaseMs: number): Promise<Claim> {
    return claim(this.pool, queues, limit, workerId, workerLeaseMs, defaultLeaseMs);
  }

  /** Gives back undelivered leases; returns the queues that got jobs back. */
  release(leases: LeaseRef[]): Promise<string[]> {
    return release(this.pool, leases);
  }

  /** Completes the leases that are still current. */
  ack(leases: LeaseRef[]): Promise<AckResult> {
    return ack(this.pool, leases, this.opts.completedRetentionMs);
  }

  /** Extends the leases that are still current; extended[i] tells leases[i] (null: lost). */
  heartbeat(leases: LeaseRef[], extendMs: number | null): Promise<({ expiresAt: Date; cancelRequested: boolean } | null)[]> {
    return heartbeat(this.pool, leases, extendMs);
  }

  /** Fails one attempt; null when the lease is not current. */
  nack(lease: LeaseRef, message: string, permanent: boolean, retryAfterMs: number | null): Promise<FailedJob | null> {
    return nack(this.pool, lease, message, permanent, retryAfterMs);
  }

  reapExpired(limit: number): Promise<FailedJob[]> {
    return reapExpired(this.pool, limit);
  }

  /** The ids of up to `limit` expired leases. */
  expiredIds(limit: number): Promise<string[]> {
    return expiredIds(this.pool, limit);
  }

  /** Fails one expired lease's attempt; null when it is no longer expired. */
  reapOne(id: string): Promise<FailedJob | null> {
    return reapOne(this.pool, id);
  }

  /** Dead-letters a running job (under `token`, when given) with `reason` in its history. */
  quarantine(id: string, reason: string, token: string | null): Promise<FailedJob | null> {
    return quarantine(this.pool, id, reason, token);
  }

  /** Moves due jobs to available; returns how many per queue. */
  promoteDue(limit: number): Promise<Map<string, number>> {
    return promoteDue(this.pool, limit);
  }

  /** Milliseconds until the next job is due (negative if overdue), or null when none waits. */
  msUntilNextDue(): Promise<number | null> {
    return msUntilNextDue(this.pool);
  }

  /** Deletes up to `limit` completed jobs whose retention has passed; returns how many. */
  pruneCompleted(limit: number): Promise<number> {
    return pruneCompleted(this.pool, limit);
  }

  notify(queue: string): Promise<void> {
    return admin.notify(this.pool, queue);
  }

  get(id: string): Promise<Job | null> {
    return admin.getJob(this.pool, id);
  }

  /** Returns the job after the change, or null when nothing was cancellable. */
  cancel(id: string): Promise<Job | null> {
    return admin.cancel(this.pool, id);
  }

  /** The distinct queues of the given jobs. */
  queuesOf(ids: string[]): Promise<string[]> {
    return admin.queuesOf(this.pool, ids);
  }

  /** The trace context headers of the given jobs (those that carry one). */
  traceHeaders(ids: string[]): Promise<Record<string, string>[]> {
    return admin.traceHeaders(this.pool, ids);
  }

  /** The ids among `ids` that are in one of `states`. */
  filterIds(ids: string[], states: JobState[]): Promise<string[]> {
    return admin.filterIds(this.pool, ids, states);
  }

  replayIds(ids: string[], states: JobState[]): Promise<admin.Replayed[]> {
    return admin.replayIds(this.pool, ids, states);
  }

  selectReplayable(f: ReplayFilter, states: JobState[], afterId: string, limit: number): Promise<string[]> {
    return admin.selectReplayable(this.pool, f, states, afterId, limit);
  }

  list(f: ListFilter): Promise<Job[]> {
    return admin.listJobs(this.pool, f);
  }

  stats(queues: string[]): Promise<QueueStats[]> {
    return queueStats(this.pool, queues);
  }

  metricsSnapshot(): Promise<MetricsSnapshot> {
    return metricsSnapshot(this.pool);
  }

  queueFlags(): Promise<{ queue: string; paused: boolean }[]> {
    return queueFlags(this.pool);
  }

  /** Resolves when the database answers a trivial query. */
  async ping(): Promise<void> {
    await query(this.pool, "SELECT 1", [], "jobwire_ping");
  }

  /** Changes the settings `c` names; returns the whole config after. */
  setQueueConfig(c: QueueConfigChange): Promise<QueueConfig> {
    return setQueueConfig(this.pool, c);
  }

  getQueueConfig(queue: string): Promise<QueueConfig> {
    return getQueueConfig(this.pool, queue);
  }

  /** Pauses or resumes a queue; returns the whole config after. */
  setPaused(queue: string, paused: boolean): Promise<QueueConfig> {
    return setPaused(this.pool, queue, paused);
  }

  /** Folds up to `limit` count deltas into the totals; returns how many. */
  foldCounters(limit: number): Promise<number> {
    return foldCounters(this.pool, limit);
  }

  /** Cluster-wide counts per queue: enqueued (by any path), completed, failed. */
  readCounters(): Promise<CounterRow[]> {
    return readCounters(this.pool);
  }

  heartbeatBroker(id: string, startedAt: Date, streams: WorkerStream[]): Promise<void> {
    return heartbeatBroker(this.pool, id, startedAt, streams);
  }

  pruneBrokers(staleMs: number): Promise<number> {
    return pruneBrokers(this.pool, staleMs);
  }

  leaveBrokers(id: string): Promise<void> {
    return leaveBrokers(this.pool, id);
  }

  /** Every replica's Lease streams, as last reported within `freshMs`. */
  listBrokerStreams(freshMs: number): Promise<WorkerStream[]> {
    return listBrokerStreams(this.pool, freshMs);
  }

  /** Records the broker defaults that the database's own code reads (the SQL enqueue()). */
  writeSettings(s: { defaultMaxAttempts: number; maxPayloadBytes: number }): Promise<void> {
    return writeSettings(this.pool, s);
  }
}
