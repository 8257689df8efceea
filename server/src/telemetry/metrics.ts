import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { BrokerHooks } from "../broker/broker.js";
import type { Logger } from "../log.js";
import type { QueueGauges } from "../model.js";
import { JobHistogram, LeaseClock } from "./job-histograms.js";

/**
 * Prometheus metrics at GET /metrics, through prom-client, with its
 * default process and Node.js metrics.
 *
 * Two kinds of series:
 *   - this replica's own work: leases handed out, acks, failures, replays,
 *     pruning, RPC durations, and the wait/run/end-to-end histograms of the
 *     jobs it leased. Sum them across replicas.
 *   - read from the database at scrape time, the same on every replica:
 *     jobs per queue and state, the oldest waiting job, paused queues,
 *     workers per queue, and jobs enqueued per queue by any path (gRPC,
 *     cron, and the SQL enqueue() that no broker sees). Take max(), not
 *     sum(), across replicas. They read only partial indexes and small
 *     tables, never the completed history, so a scrape stays cheap.
 *
 * A queue, once seen, keeps a series per state, at 0 when empty: an alert
 * on "dead jobs growing" needs the series to exist before the first death.
 * When the database does not answer, /metrics still answers: process
 * metrics, this replica's counters, and jobwire_database_up 0.
 */

/** Seconds: from 1 ms to an hour, for waits, runs and end-to-end times. */
const JOB_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600];
/** Seconds: unary RPCs, from 0.5 ms to 10 s. */
const RPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];
/** A scrape waits this long for the database before reporting it down. */
const SCRAPE_DB_TIMEOUT_MS = 2000;
const STATES = ["scheduled", "available", "running", "retryable", "dead"] as const;

export class Metrics {
  readonly registry = new Registry();
  private readonly clock = new LeaseClock();
  private readonly seenQueues = new Set<string>();

  // This replica's work.
  readonly leased = new Counter({ name: "jobwire_jobs_leased_total", help: "Leases handed to workers by this replica.", labelNames: ["queue"], registers: [this.registry] });
  readonly acked = new Counter({ name: "jobwire_jobs_acked_total", help: "Jobs completed by Ack through this replica.", labelNames: ["queue"], registers: [this.registry] });
  readonly lostAcks = new Counter({ name: "jobwire_acks_lost_total", help: "Ack tokens refused because their lease was lost.", registers: [this.registry] });
  readonly duplicates = new Counter({ name: "jobwire_jobs_duplicate_total", help: "Enqueued jobs skipped because their idempotency key was live.", registers: [this.registry] });
  readonly failed = new Counter({
    name: "jobwire_jobs_failed_total",
    help: "Failed attempts, by what happened next (retry, dead, cancelled) and why (nack, lease_expired).",
    labelNames: ["queue", "outcome", "cause"],
    registers: [this.registry],
  });
  readonly replayed = new Counter({ name: "jobwire_jobs_replayed_total", help: "Jobs revived by Replay.", labelNames: ["queue"], registers: [this.registry] });
  readonly pruned = new Counter({ name: "jobwire_jobs_pruned_total", help: "Completed jobs deleted by this replica's pruner after their retention.", registers: [this.registry] });
  readonly rpcSeconds = new Histogram({
    name: "jobwire_rpc_duration_seconds",
    help: "Unary RPCs served by this replica, by method and status code.",
    labelNames: ["method", "code"],
    buckets: RPC_BUCKETS,
    registers: [this.registry],
  });
  readonly waitSeconds = new JobHistogram("jobwire_job_wait_seconds", "From due (available) to leased, per job leased by this replica.", JOB_BUCKETS, this.registry);
  readonly runSeconds = new JobHistogram("jobwire_job_run_seconds", "From leased to acked or nacked, per job settled through this replica.", JOB_BUCKETS, this.registry);
  readonly endToEndSeconds = new JobHistogram("jobwire_job_end_to_end_seconds", "From enqueued to completed, per job acked through this replica.", JOB_BUCKETS, this.registry);
  readonly leaseStreams = new Gauge({ name: "jobwire_lease_streams", help: "Open Lease streams on this replica.", registers: [this.registry] });

  // From the database, cluster-wide.
  readonly databaseUp = new Gauge({ name: "jobwire_database_up", help: "1 when the database answered this scrape, else 0.", registers: [this.registry] });
  readonly queueJobs = new Gauge({ name: "jobwire_queue_jobs", help: "Jobs per queue and state (waiting, running and dead; completed jobs are counted by jobwire_jobs_acked_total). Cluster-wide.", labelNames: ["queue", "state"], registers: [this.registry] });
  readonly oldest = new Gauge({ name: "jobwire_queue_oldest_available_seconds", help: "How long the oldest available job has been due. Cluster-wide.", labelNames: ["queue"], registers: [this.registry] });
  readonly paused = new Gauge({ name: "jobwire_queue_paused", help: "1 while the queue is paused (PauseQueue). Cluster-wide.", labelNames: ["queue"], registers: [this.registry] });
  readonly workers = new Gauge({ name: "jobwire_queue_workers", help: "Open Lease streams taking from the queue, on every replica. Cluster-wide.", labelNames: ["queue"], registers: [this.registry] });
  readonly completedTotal = new Counter({
    name: "jobwire_queue_completed_total",
    help: "Jobs completed per queue through any replica. Cluster-wide, read from the database: a replica's restart does not reset it.",
    labelNames: ["queue"],
    registers: [this.registry],
  });
  readonly failedTotal = new Counter({
    name: "jobwire_queue_failed_total",
    help: "Failed attempts per queue (retried or dead), through any replica or the reaper. Cluster-wide, read from the database.",
    labelNames: ["queue"],
    registers: [this.registry],
  });
  readonly enqueued = new Counter({
    name: "jobwire_jobs_enqueued_total",
    help: "Jobs enqueued per queue by any path: gRPC, cron, and the SQL enqueue(). Cluster-wide, read from the database.",
    labelNames: ["queue"],
    registers: [this.registry],
  });

  constructor(
    /** The database's figures, through the broker. */
    private readonly gauges: () => Promise<QueueGauges>,
    private readonly openStreams: () => number,
    private readonly log: Logger,
  ) {
    collectDefaultMetrics({ register: this.registry });
  }

  hooks(): BrokerHooks {
    return {
      enqueued: (_queues, duplicates) => {
        if (duplicates) this.duplicates.inc(duplicates);
      },
      leased: (leases) => {
        const now = Date.now();
        let queue = "";
        let n = 0;
        for (const l of leases) {
          const j = l.job;
          if (j.queue !== queue) {
            if (n > 0) this.leased.inc({ queue }, n);
            queue = j.queue;
            n = 0;
          }
          n++;
          this.waitSeconds.observe(j.queue, Math.max(0, now - j.runAt.getTime()) / 1000);
          this.clock.leased(j.id, j.queue, j.createdAt.getTime(), now);
        }
        if (n > 0) this.leased.inc({ queue }, n);
      },
      acked: (perQueue) => {
        for (const [queue, n] of perQueue) this.acked.inc({ queue }, n);
      },
      completed: (ids) => {
        const now = Date.now();
        for (const id of ids) {
          const l = this.clock.settle(id);
          if (l === undefined) continue;
          this.runSeconds.observe(l.queue, (now - l.leasedAt) / 1000);
          this.endToEndSeconds.observe(l.queue, (now - l.createdAt) / 1000);
        }
      },
      lostAcks: (n) => this.lostAcks.inc(n),
      failed: (jobs, cause) => {
        const now = Date.now();
        for (const j of jobs) {
          this.failed.inc({ queue: j.queue, outcome: j.state === "available" || j.state === "retryable" ? "retry" : j.state, cause });
          const l = this.clock.settle(j.id);
          if (l !== undefined && cause === "nack") this.runSeconds.observe(l.queue, (now - l.leasedAt) / 1000);
        }
      },
      replayed: (jobs) => {
        for (const [queue, n] of count(jobs.map((j) => j.queue))) this.replayed.inc({ queue }, n);
      },
      pruned: (n) => this.pruned.inc(n),
    };
  }

  /** An interceptor timing each unary RPC by method and final code. */
  rpcInterceptor(): Interceptor {
    return (next) => async (req) => {
      if (req.stream) return next(req);
      const t0 = performance.now();
      let code = "ok";
      try {
        return await next(req);
      } catch (err) {
        code = Code[ConnectError.from(err).code] ?? "unknown";
        throw err;
      } finally {
        this.rpcSeconds.observe({ method: req.method.name, code: snake(code) }, (performance.now() - t0) / 1000);
      }
    };
  }

  async render(): Promise<{ contentType: string; body: string }> {
    this.leaseStreams.set(this.openStreams());
    try {
      this.fill(await withTimeout(this.gauges(), SCRAPE_DB_TIMEOUT_MS));
      this.databaseUp.set(1);
    } catch (err) {
      this.log.warn("metrics: the database did not answer; reporting process metrics only", { err: (err as Error).message });
      this.databaseUp.set(0);
      for (const g of [this.queueJobs, this.oldest, this.paused, this.workers]) g.reset();
      for (const c of [this.enqueued, this.completedTotal, this.failedTotal]) c.reset();
    }
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  private fill(g: QueueGauges): void {
    for (const q of g.queues) this.seenQueues.add(q);
    for (const c of g.counts) this.seenQueues.add(c.queue);
    this.queueJobs.reset();
    for (const queue of this.seenQueues) for (const state of STATES) this.queueJobs.set({ queue, state }, 0);
    for (const c of g.counts) this.queueJobs.set({ queue: c.queue, state: c.state }, c.n);
    this.oldest.reset();
    for (const queue of this.seenQueues) this.oldest.set({ queue }, 0);
    for (const o of g.oldest) this.oldest.set({ queue: o.queue }, o.seconds);
    this.paused.reset();
    for (const queue of this.seenQueues) this.paused.set({ queue }, g.paused.includes(queue) ? 1 : 0);
    this.workers.reset();
    for (const queue of this.seenQueues) this.workers.set({ queue }, g.workers.get(queue) ?? 0);
    for (const [counter, totals] of [
      [this.enqueued, g.enqueued],
      [this.completedTotal, g.completed],
      [this.failedTotal, g.failed],
    ] as const) {
      counter.reset();
      for (const queue of this.seenQueues) counter.inc({ queue }, totals.get(queue) ?? 0);
    }
    // This replica's counters start at 0 for every queue known, not at
    // their first event: rate() over a series that appears with its first
    // failure misses that failure.
    for (const queue of this.seenQueues) {
      for (const c of [this.leased, this.acked, this.replayed]) c.inc({ queue }, 0);
      for (const outcome of ["retry", "dead", "cancelled"]) for (const cause of ["nack", "lease_expired"]) this.failed.inc({ queue, outcome, cause }, 0);
    }
  }
}

function count(items: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const i of items) m.set(i, (m.get(i) ?? 0) + 1);
  return m;
}

/** "InvalidArgument" -> "invalid_argument", as gRPC names its codes. */
function snake(code: string): string {
  return code.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
