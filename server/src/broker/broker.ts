import { MAX_DURATION_MS, type Config } from "../config.js";
import { BrokerError, invalid } from "../errors.js";
import type { Logger } from "../log.js";
import type {
  EnqueueResult,
  FailedJob,
  HeartbeatResult,
  Job,
  JobState,
  Lease,
  LeaseRef,
  NackResult,
  NewJob,
  QueueConfig,
  QueueConfigChange,
  QueueGauges,
  QueueSettings,
  QueueSample,
  QueueStats,
  ReplayFilter,
  Schedule,
  WorkerStream,
} from "../model.js";
import type { JobStore } from "../store/jobs.js";
import type { ScheduleStore } from "../store/schedules.js";
import { CronError, nextFire, parseCron } from "./cron.js";
import type { Dispatcher, LeaseSession } from "./dispatcher.js";
import { decodeToken } from "./token.js";
import { FULL_ACCESS, type Access } from "./access.js";
import { Coalescer } from "./coalescer.js";
import { approxJobBytes } from "./size.js";
import {
  checkJobId,
  checkJobSpec,
  checkDurationMs,
  checkText,
  checkJobSpecs,
  checkLeaseMs,
  checkRetentionMs,
  checkLeaseOpen,
  checkLimit,
  checkMaxAttempts,
  checkQueue,
  checkRateLimit,
  checkRetry,
  truncateMessage,
  type LeaseOpenInput,
} from "./validate.js";

/** Most rows in one coalesced INSERT or ack UPDATE. */
export const COALESCE_MAX_ROWS = 5000;
/** Most lease tokens in one Ack or Heartbeat call. */
export const MAX_TOKENS_PER_CALL = 10_000;
/** Most jobs one Replay call touches, and its default limit for filters. */
export const MAX_REPLAY = 10_000;
/** Rows per replay statement, so a large replay never holds one long lock. */
export const REPLAY_BATCH = 1000;
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;

/** Lifecycle events for metrics and traces; every hook is optional. */
export interface BrokerHooks {
  /** The queue of every job created, and how many specs were duplicates. */
  enqueued?(queues: string[], duplicates: number): void;
  leased?(leases: Lease[]): void;
  /** The jobs an Ack completed through this replica. */
  completed?(ids: string[]): void;
  /** Jobs completed by one ack statement, per queue. */
  acked?(perQueue: Map<string, number>): void;
  /** Ack tokens refused because their lease was lost. */
  lostAcks?(count: number): void;
  failed?(jobs: FailedJob[], cause: "nack" | "lease_expired"): void;
  /** Completed jobs deleted by the pruner after their retention. */
  pruned?(count: number): void;
  replayed?(jobs: { id: string; queue: string; headers: Record<string, string> }[]): void;
}

export interface ReplayInput {
  jobIds: string[];
  filter: ReplayFilter | null;
  limit: number;
  dryRun: boolean;
  includeCancelled: boolean;
}

export interface ListInput {
  queue: string;
  type: string;
  errorContains: string;
  states: JobState[];
  pageSize: number;
  pageToken: string;
}

/**
 * What the broker needs from the rest of the process: the background loops
 * and this replica's identity, which app.ts wires in (the broker owns
 * none of them: see app.ts).
 */
export interface BrokerEnv {
  /** A job becomes due in `ms` (a retry's backoff): the scheduler should look by then. */
  jobDueIn(ms: number): void;
  /** A schedule's next fire is in `ms`. */
  scheduleDueIn(ms: number): void;
  /** This replica's id (ListWorkers names it). */
  brokerId: string;
  /** The sampled history of one queue, or of all (maintenance/sampler.ts), and the time between samples. */
  history(queue: string | null): { samples: QueueSample[]; intervalMs: number };
}

/** Other replicas report their streams every 5 s; a report older than 15 s is a replica that is gone. */
const WORKERS_FRESH_MS = 15_000;

/**
 * The broker's domain: every operation producers, workers and operators
 * can ask for, in plain types. It validates input and calls the store.
 */
export class Broker {
  /** Concurrent Enqueue calls share one INSERT; concurrent Acks share one UPDATE. */
  private readonly inserts: Coalescer<NewJob, EnqueueResult>;
  private readonly acks: Coalescer<LeaseRef, boolean>;

  constructor(
    private readonly cfg: Config,
    readonly store: JobStore,
    private readonly schedules: ScheduleStore,
    readonly dispatcher: Dispatcher,
    private readonly env: BrokerEnv,
    private readonly log: Logger,
    private readonly hooks: BrokerHooks = {},
  ) {
    const parallel = Math.max(1, Math.floor(cfg.poolSize / 3));
    const down = (err: unknown) => err instanceof BrokerError && err.kind === "unavailable";
    this.inserts = new Coalescer((jobs) => store.enqueue(jobs), COALESCE_MAX_ROWS, parallel, down);
    this.acks = new Coalescer(
      async (refs) => {
        const r = await store.ack(refs);
        if (r.perQueue.size > 0) hooks.acked?.(r.perQueue);
        return r.acked;
      },
      COALESCE_MAX_ROWS,
      parallel,
      down,
    );
  }

  // --- producers ------------------------------------------------------------

  async enqueue(specs: NewJob[], access: Access = FULL_ACCESS): Promise<EnqueueResult[]> {
    const jobs = checkJobSpecs(specs, this.cfg);
    if (!access.allQueues) for (const [i, j] of jobs.entries()) access.requireQueue(j.queue, `jobs[${i}].queue`);
    const results = await this.inserts.submit(jobs);
    this.hooks.enqueued?.(
      jobs.filter((_, i) => !results[i]!.duplicate).map((j) => j.queue),
      results.filter((r) => r.duplicate).length,
    );
    return results;
  }

  async getJob(id: string, access: Access = FULL_ACCESS): Promise<Job> {
    const job = await this.store.get(checkJobId("id", id));
    if (!job) throw new BrokerError("not_found", `job ${id} does not exist`);
    access.requireQueue(job.queue, "id");
    return job;
  }

  async cancelJob(id: string, access: Access = FULL_ACCESS): Promise<Job> {
    // Which queue the job is on decides whether this caller may cancel it.
    if (!access.allQueues) await this.getJob(id, access);
    const changed = await this.store.cancel(checkJobId("id", id));
    if (changed) return changed;
    const job = await this.getJob(id);
    if (job.state === "cancelled") return job;
    throw new BrokerError("failed_precondition", `job ${id} is ${job.state} and can no longer be cancelled`);
  }

  // --- workers --------------------------------------------------------------

  openLease(o: LeaseOpenInput, access: Access = FULL_ACCESS): LeaseSession {
    const open = checkLeaseOpen(o, this.cfg);
    for (const [i, q] of open.queues.entries()) access.requireQueue(q, `open.queues[${i}]`);
    return this.dispatcher.open(open);
  }

  /** Completes jobs; returns the tokens whose lease was lost. */
  async ack(tokens: string[]): Promise<string[]> {
    const refs = this.decodeTokens("lease_tokens", tokens);
    const done = await this.acks.submit(refs);
    const lost: string[] = [];
    const ids: string[] = [];
    for (let i = 0; i < tokens.length; i++) {
      if (done[i]) ids.push(refs[i]!.id);
      else lost.push(tokens[i]!);
    }
    this.hooks.completed?.(ids);
    if (lost.length > 0) this.hooks.lostAcks?.(lost.length);
    return lost;
  }

  async nack(token: string, message: string, permanent: boolean, retryAfterMs: number | null): Promise<NackResult> {
    const ref = this.decodeToken("lease_token", token);
    const retryAfter = checkDurationMs("retry_after", retryAfterMs, MAX_DURATION_MS);
    const text = truncateMessage(message);
    let failed: FailedJob | null;
    try {
      failed = await this.store.nack(ref, text, permanent, retryAfter);
    } catch (err) {
      if (err instanceof BrokerError) throw err;
      // The failure statement broke on this job's own data: record the
      // failure anyway, as dead, rather than leave the job running until
      // its lease expires into the same error.
      this.log.error("nack failed; dead-lettering the job", { jobId: ref.id, err });
      failed = await this.store.quarantine(ref.id, `${text} (and its next attempt could not be scheduled: ${(err as Error).message})`, ref.token);
    }
    if (!failed) {
      throw new BrokerError(
        "failed_precondition",
        "lease_token: the lease is no longer held (it expired and was reclaimed, or the job was already acked or nacked)",
        "lease_token",
      );
    }
    this.afterFailure([failed], "nack");
    return { state: failed.state, runAt: failed.runAt };
  }

  async heartbeat(tokens: string[], extendMs: number | null): Promise<HeartbeatResult[]> {
    const refs = this.decodeTokens("lease_tokens", tokens);
    const extend = checkLeaseMs("extend_by", extendMs);
    const alive = await this.store.heartbeat(refs, extend);
    return tokens.map((token, i) => {
      const hit = alive[i];
      return hit
        ? { token, lost: false, expiresAt: hit.expiresAt, cancelRequested: hit.cancelRequested }
        : { token, lost: true, expiresAt: null, cancelRequested: false };
    });
  }

  // --- operators ------------------------------------------------------------

  async replay(r: ReplayInput, access: Access = FULL_ACCESS): Promise<string[]> {
    const states: JobState[] = r.includeCancelled ? ["dead", "cancelled"] : ["dead"];
    if (r.jobIds.length > 0 && r.filter) throw invalid("filter", "give either job_ids or filter, not both");
    if (r.jobIds.length === 0 && !r.filter) throw invalid("job_ids", "give job_ids or a filter");
    if (r.limit < 0 || r.limit > MAX_REPLAY) throw invalid("limit", `must be from 0 (default) to ${MAX_REPLAY}`);
    const limit = r.limit || MAX_REPLAY;

    if (r.jobIds.length > 0) {
      if (r.jobIds.length > MAX_REPLAY) throw invalid("job_ids", `holds more than ${MAX_REPLAY} ids`);
      const ids = [...new Set(r.jobIds.map((id, i) => checkJobId(`job_ids[${i}]`, id)))];
      if (!access.allQueues) {
        for (const q of await this.store.queuesOf(ids)) access.requireQueue(q, "job_ids");
      }
      if (r.dryRun) return this.store.filterIds(ids, states);
      const out: string[] = [];
      for (let i = 0; i < ids.length; i += REPLAY_BATCH) out.push(...(await this.replayBatch(ids.slice(i, i + REPLAY_BATCH), states)));
      return out;
    }

    const f = r.filter!;
    checkQueue("filter.queue", f.queue);
    access.requireQueue(f.queue, "filter.queue");
    if (f.type) checkText("filter.type", f.type);
    if (f.errorContains) checkText("filter.error_contains", f.errorContains);
    if (f.finishedAfter && f.finishedBefore && f.finishedAfter >= f.finishedBefore) {
      throw invalid("filter.finished_before", "must be after finished_after");
    }
    const out: string[] = [];
    let after = "0";
    while (out.length < limit) {
      const ids = await this.store.selectReplayable(f, states, after, Math.min(REPLAY_BATCH, limit - out.length));
      if (ids.length === 0) break;
      after = ids[ids.length - 1]!;
      out.push(...(r.dryRun ? ids : await this.replayBatch(ids, states)));
    }
    return out;
  }

  private async replayBatch(ids: string[], states: JobState[]): Promise<string[]> {
    const moved = await this.store.replayIds(ids, states);
    if (moved.length > 0) {
      this.log.info("replayed jobs", { count: moved.length });
      this.hooks.replayed?.(moved);
    }
    return moved.map((m) => m.id);
  }

  async listJobs(l: ListInput, access: Access = FULL_ACCESS): Promise<{ jobs: Job[]; nextPageToken: string; sizeLimited: boolean }> {
    if (l.queue) checkQueue("queue", l.queue);
    access.requireNamedQueue(l.queue, "queue");
    checkText("type", l.type);
    if (l.pageSize < 0 || l.pageSize > MAX_PAGE_SIZE) throw invalid("page_size", `must be from 0 (default) to ${MAX_PAGE_SIZE}`);
    const beforeId = l.pageToken ? checkJobId("page_token", l.pageToken) : null;
    const size = l.pageSize || DEFAULT_PAGE_SIZE;
    checkText("error_contains", l.errorContains);
    const jobs = await this.store.list({
      queue: l.queue || null,
      type: l.type || null,
      errorContains: l.errorContains || null,
      states: l.states,
      beforeId,
      limit: size + 1,
    });
    const more = jobs.length > size;
    if (more) jobs.pop();
    // Never a response the client would refuse: stop the page early and say so.
    const budget = Math.floor(this.cfg.maxMessageBytes * 0.9);
    let bytes = 0;
    for (let i = 0; i < jobs.length; i++) {
      bytes += approxJobBytes(jobs[i]!);
      if (bytes > budget && i > 0) {
        jobs.length = i;
        return { jobs, nextPageToken: jobs[i - 1]!.id, sizeLimited: true };
      }
    }
    return { jobs, nextPageToken: more ? jobs[jobs.length - 1]!.id : "", sizeLimited: false };
  }

  async queueStats(queues: string[], access: Access = FULL_ACCESS): Promise<QueueStats[]> {
    queues.forEach((q, i) => {
      checkQueue(`queues[${i}]`, q);
      access.requireQueue(q, `queues[${i}]`);
    });
    // Every queue, for a caller limited to some: only theirs.
    return (await this.store.stats(queues)).filter((s) => access.allows(s.queue));
  }

  /** Changes exactly the settings the change names (null clears one); answers with the whole config. */
  async setQueueConfig(c: QueueConfigChange, access: Access = FULL_ACCESS): Promise<QueueConfig> {
    checkQueue("queue", c.queue);
    access.requireQueue(c.queue, "queue");
    const v = c.values;
    const values: QueueSettings = {
      maxAttempts: checkMaxAttempts("max_attempts", v.maxAttempts),
      leaseMs: checkLeaseMs("lease_duration", v.leaseMs),
      retry: checkRetry("retry", v.retry),
      completedRetentionMs: checkRetentionMs("completed_retention", v.completedRetentionMs),
      maxRunning: checkLimit("max_running", v.maxRunning),
      maxRunningPerKey: checkLimit("max_running_per_key", v.maxRunningPerKey),
      rateLimit: checkRateLimit("rate_limit", v.rateLimit),
      rateLimitPerKey: checkRateLimit("rate_limit_per_key", v.rateLimitPerKey),
    };
    const config = await this.store.setQueueConfig({ queue: c.queue, values, fields: c.fields });
    // Looser limits may let held-back jobs start now.
    this.store.notify(c.queue).catch((err) => this.log.warn("notify failed", { err, queue: c.queue }));
    return config;
  }

  /** The database's figures for /metrics. */
  async gauges(): Promise<QueueGauges> {
    const [snap, counters, flags, others] = await Promise.all([
      this.store.metricsSnapshot(),
      this.store.readCounters(),
      this.store.queueFlags(),
      this.store.listBrokerStreams(WORKERS_FRESH_MS),
    ]);
    const workers = new Map<string, number>();
    const streams = [...this.dispatcher.streams(this.env.brokerId), ...others.filter((s) => s.brokerId !== this.env.brokerId)];
    for (const s of streams) for (const q of s.queues) workers.set(q, (workers.get(q) ?? 0) + 1);
    const totals = { enqueued: new Map<string, number>(), completed: new Map<string, number>(), failed: new Map<string, number>() };
    for (const c of counters) totals[c.kind].set(c.queue, c.total);
    return {
      queues: [...new Set([...flags.map((f) => f.queue), ...counters.map((c) => c.queue)])],
      counts: snap.counts,
      oldest: snap.oldest,
      paused: flags.filter((f) => f.paused).map((f) => f.queue),
      workers,
      ...totals,
    };
  }

  /** True when the database answers (/readyz). */
  async ready(): Promise<boolean> {
    return this.store.ping().then(
      () => true,
      () => false,
    );
  }

  /** Open Lease streams on every replica: this one's as they are now, the others' as they last reported. */
  async listWorkers(queue: string, access: Access = FULL_ACCESS): Promise<WorkerStream[]> {
    if (queue) {
      checkQueue("queue", queue);
      access.requireQueue(queue, "queue");
    }
    const others = (await this.store.listBrokerStreams(WORKERS_FRESH_MS)).filter((s) => s.brokerId !== this.env.brokerId);
    const all = [...this.dispatcher.streams(this.env.brokerId), ...others];
    // A caller limited to some queues sees the streams that take from them.
    const mine = all.filter((s) => s.queues.some((q) => access.allows(q)));
    return queue ? mine.filter((s) => s.queues.includes(queue)) : mine;
  }

  queueHistory(queue: string, access: Access = FULL_ACCESS): { samples: QueueSample[]; intervalMs: number } {
    if (queue) {
      checkQueue("queue", queue);
      access.requireQueue(queue, "queue");
    }
    const h = this.env.history(queue || null);
    return { samples: h.samples.filter((s) => access.allows(s.queue)), intervalMs: h.intervalMs };
  }

  async getQueueConfig(queue: string, access: Access = FULL_ACCESS): Promise<QueueConfig> {
    checkQueue("queue", queue);
    access.requireQueue(queue, "queue");
    return this.store.getQueueConfig(queue);
  }

  /** No replica leases the queue's jobs once this commits; running jobs finish. */
  async pauseQueue(queue: string, access: Access = FULL_ACCESS): Promise<QueueConfig> {
    checkQueue("queue", queue);
    access.requireQueue(queue, "queue");
    const config = await this.store.setPaused(queue, true);
    this.log.info("queue paused", { queue });
    return config;
  }

  async resumeQueue(queue: string, access: Access = FULL_ACCESS): Promise<QueueConfig> {
    checkQueue("queue", queue);
    access.requireQueue(queue, "queue");
    const config = await this.store.setPaused(queue, false);
    this.log.info("queue resumed", { queue });
    return config;
  }

  async setSchedule(s: { name: string; cron: string; job: NewJob | null; paused: boolean }, access: Access = FULL_ACCESS): Promise<Schedule> {
    checkQueue("schedule.name", s.name);
    if (!s.cron.trim()) throw invalid("schedule.cron", "is required");
    let next: Date | null = null;
    try {
      const cron = parseCron(s.cron);
      next = nextFire(cron, await this.schedules.now());
      if (!next) throw new CronError("never fires");
    } catch (err) {
      if (err instanceof CronError) throw invalid("schedule.cron", err.message);
      throw err;
    }
    if (!s.job) throw invalid("schedule.job", "is required");
    if (s.job.runAt || s.job.delayMs !== null) throw invalid("schedule.job", "must not set run_at or delay; the schedule decides when");
    if (s.job.idempotencyKey) throw invalid("schedule.job.idempotency_key", "must be unset; each fire is keyed by its time");
    const template = checkJobSpec(s.job, "schedule.job", this.cfg);
    access.requireQueue(template.queue, "schedule.job.queue");
    const saved = await this.schedules.upsert({ name: s.name, cron: s.cron.trim(), template, paused: s.paused, nextRunAt: s.paused ? null : next });
    this.env.scheduleDueIn(Math.max(0, next.getTime() - Date.now()));
    return saved;
  }

  async deleteSchedule(name: string, access: Access = FULL_ACCESS): Promise<void> {
    checkQueue("name", name);
    if (!access.allQueues) {
      const s = (await this.schedules.list()).find((x) => x.name === name);
      if (s) access.requireQueue(s.template.queue, "name");
    }
    if (!(await this.schedules.delete(name))) throw new BrokerError("not_found", `schedule ${name} does not exist`);
  }

  async listSchedules(access: Access = FULL_ACCESS): Promise<Schedule[]> {
    return (await this.schedules.list()).filter((s) => access.allows(s.template.queue));
  }

  // --- internals ------------------------------------------------------------

  /** After failed attempts (a nack, or the reaper's): wake whoever can act on the jobs' new states. */
  afterFailure(jobs: FailedJob[], cause: "nack" | "lease_expired"): void {
    this.hooks.failed?.(jobs, cause);
    const wake = new Set<string>();
    for (const j of jobs) {
      if (j.state === "available" || j.wakesQueue) wake.add(j.queue);
      else if (j.state === "retryable") this.env.jobDueIn(j.runAt.getTime() - Date.now());
    }
    for (const q of wake) {
      this.store.notify(q).catch((err) => this.log.warn("notify failed", { err, queue: q }));
    }
  }

  /**
   * The trace context of the jobs the given lease tokens name (tokens that
   * do not parse are skipped: the call itself will refuse them). For the
   * links of Ack and Nack spans; one query, and only with tracing on.
   */
  async traceContextsOfLeases(tokens: readonly string[]): Promise<Record<string, string>[]> {
    const ids: string[] = [];
    for (const t of tokens) {
      const ref = decodeToken(t);
      if (ref) ids.push(ref.id);
    }
    return ids.length === 0 ? [] : this.store.traceHeaders(ids);
  }

  private decodeToken(field: string, token: string): LeaseRef {
    if (token === "") throw invalid(field, "is required");
    const ref = decodeToken(token);
    if (!ref) throw invalid(field, "is not a lease token issued by this broker");
    return ref;
  }

  private decodeTokens(field: string, tokens: string[]): LeaseRef[] {
    if (tokens.length === 0) throw invalid(field, "must hold at least one token");
    if (tokens.length > MAX_TOKENS_PER_CALL) throw invalid(field, `holds ${tokens.length} tokens; the limit is ${MAX_TOKENS_PER_CALL}`);
    const refs = new Array<LeaseRef>(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const ref = decodeToken(tokens[i]!);
      // The field path only on failure: building it per token showed in profiles.
      refs[i] = ref ?? this.decodeToken(`${field}[${i}]`, tokens[i]!);
    }
    return refs;
  }
}
