/**
 * The peers' tuning, in one place, so the printed report and the JSON say
 * exactly what ran.
 *
 * graphile-worker 0.17: the settings of its performance page
 * (https://worker.graphile.org/docs/performance): 24 concurrent jobs per
 * instance, a pool of 25, a local queue of 500 jobs fetched per query, and
 * batched completions and failures (completeJobBatchDelay /
 * failJobBatchDelay 0: flush on the next tick, so every completion in the
 * same tick shares one statement).
 *
 * pg-boss 10: it has no LISTEN/NOTIFY path, so each worker polls; 0.5 s is
 * the smallest polling interval it accepts, and a worker waits out the rest
 * of the interval after every batch. Its throughput is therefore capped at
 * workers x batchSize / 0.5 s, and batchSize is the tuning knob.
 *
 * BullMQ 6 on Redis (redis.ts): a Worker per process with the same
 * concurrency as jobwire's (--concurrency, the Lease stream's
 * max_in_flight), so both runtimes may hold as many jobs at once; completed
 * jobs are removed as they finish (removeOnComplete count 0), as
 * graphile-worker deletes its jobs and the bench's jobwire queues do; failed
 * ones are kept, so the final check sees them. Everything else is BullMQ's
 * default: 30 s locks renewed at half-time, a stalled check every 30 s.
 */
import { Logger } from "graphile-worker";
import PgBoss from "pg-boss";

export const GRAPHILE_TUNING = {
  concurrentJobs: 24,
  maxPoolSize: 25,
  localQueue: { size: 500 },
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
};

export const PGBOSS_POLLING_INTERVAL_SECONDS = 0.5;

/** Jobs per fetch; see the measurements in docs/performance.md. */
export const PGBOSS_BATCH_SIZE = Number(process.env.BENCH_PGBOSS_BATCH ?? 1000);

export function pgBossTuning() {
  return { batchSize: PGBOSS_BATCH_SIZE, pollingIntervalSeconds: PGBOSS_POLLING_INTERVAL_SECONDS };
}

export const BULLMQ_VERSION = "6.7.6";

export function bullmqTuning(concurrency: number) {
  return { concurrency, removeOnComplete: { count: 0 }, removeOnFail: { count: 100_000 } };
}

/** A graphile-worker logger that drops everything but errors, which it collects. */
export function quietGraphileLogger(errors: string[]): Logger {
  return new Logger(() => (level, message) => {
    if (level === "error") errors.push(message);
  });
}

/**
 * A started pg-boss instance. The bench process installs the schema
 * (role "setup"); workers and producers attach to it without migrating,
 * and only workers run its maintenance (supervise).
 * Cron scheduling is off everywhere (the bench schedules nothing).
 */
export async function startBoss(connectionString: string, o: { role: "setup" | "producer" | "worker"; errors?: string[] }): Promise<PgBoss> {
  const boss = new PgBoss({
    connectionString,
    max: 10,
    schedule: false,
    migrate: o.role === "setup",
    supervise: o.role === "worker",
    application_name: `pgboss-${o.role}`,
  });
  boss.on("error", (err: Error) => {
    if (o.errors) o.errors.push(err.message);
    else process.stderr.write(`pg-boss error: ${err.message}\n`);
  });
  await boss.start();
  return boss;
}
