/**
 * The bench process's handle on each system's store: install its schema,
 * make queues, ask how many jobs are still outstanding (the end-of-run
 * check, polled only once the workers report every job handled), and verify
 * the final state. Everything here is off the measured path.
 */
import { JobwireClient } from "@jobwire/client";
import type pg from "pg";
import { runMigrations } from "graphile-worker";
import type PgBoss from "pg-boss";
import { startBroker, type BrokerProcess } from "./broker.js";
import type { SystemName } from "./options.js";
import { quietGraphileLogger, startBoss } from "./peers.js";
import { benchPool, settle, type BenchPostgres } from "./postgres.js";
import { startRedis, type RedisProcess } from "./redis.js";
import { JOB_TYPE } from "./senders.js";

export interface System {
  name: SystemName;
  /** What workers and producers connect to: the broker's address, the database URL, or Redis's redis:// URL. */
  endpoint: string;
  /** The bench's own connections to the system's database; null for BullMQ, which has none. */
  pool: pg.Pool | null;
  broker: BrokerProcess | null;
  /** BullMQ's redis-server (its CPU is measured like the broker's). */
  redis: RedisProcess | null;
  /** Between scenarios: vacuum, analyse and checkpoint the system's tables, so no scenario pays for the one before. */
  settle(): Promise<void>;
  prepareQueue(queue: string): Promise<void>;
  /** Jobs of `queue` not yet completed. */
  remaining(queue: string): Promise<number>;
  /** Problems with the final state of `queue` after `expected` no-op jobs ran once each; [] when all is well. */
  verify(queue: string, expected: number): Promise<string[]>;
  /** Removes the queue's jobs (after bulk enqueue, which runs none). */
  purge(queue: string): Promise<void>;
  close(): Promise<void>;
}

const num = (v: unknown) => Number(v ?? 0);

/**
 * keepHistory: completed jobs stay (the broker's default retention);
 * otherwise each queue gets a retention of zero through SetQueueConfig, as a
 * user who wants no history would set it, and acked jobs are deleted.
 */
async function jobwireSystem(pgs: BenchPostgres, brokerExecArgv: string[], keepHistory: boolean): Promise<System> {
  const url = await pgs.createDatabase("bench_jobwire");
  const broker = await startBroker(url, brokerExecArgv); // migrates the database on start
  const pool = benchPool(url);
  return {
    name: "jobwire",
    endpoint: broker.address,
    pool,
    broker,
    redis: null,
    settle: () => settle(pool, ["jobwire.jobs"]),
    prepareQueue: async (queue) => {
      if (keepHistory) return;
      const client = new JobwireClient({ address: broker.address });
      try {
        await client.setQueueConfig(queue, { completedRetentionMs: 0 });
      } finally {
        client.close();
      }
    },
    // One count per partial index (claim, running, due): never a scan of the history.
    remaining: async (queue) => {
      const { rows } = await pool.query(
        `SELECT (SELECT count(*) FROM jobwire.jobs WHERE state = 'available' AND queue = $1)
              + (SELECT count(*) FROM jobwire.jobs WHERE state = 'running' AND queue = $1)
              + (SELECT count(*) FROM jobwire.jobs WHERE state IN ('scheduled', 'retryable') AND queue = $1) AS n`,
        [queue],
      );
      return num(rows[0].n);
    },
    verify: async (queue, expected) => {
      const { rows } = await pool.query(
        `SELECT count(*) AS total, count(*) FILTER (WHERE state = 'completed') AS completed,
                count(*) FILTER (WHERE attempt <> 1) AS redelivered
         FROM jobwire.jobs WHERE queue = $1 AND type = $2`,
        [queue, JOB_TYPE],
      );
      const r = rows[0];
      const problems: string[] = [];
      // With a retention of zero the acked jobs are gone, and the workers'
      // reports alone prove each ran once; nothing may be left in any other state.
      const expectedRows = keepHistory ? expected : 0;
      if (num(r.total) !== expectedRows) problems.push(`${num(r.total)} jobs in the table, expected ${expectedRows}`);
      if (num(r.completed) !== expectedRows) problems.push(`${num(r.completed)} completed, expected ${expectedRows}`);
      if (num(r.redelivered) !== 0) problems.push(`${num(r.redelivered)} jobs took more than one attempt`);
      return problems;
    },
    purge: async (queue) => {
      await pool.query("DELETE FROM jobwire.jobs WHERE queue = $1", [queue]);
    },
    close: async () => {
      await broker.stop();
      await pool.end();
    },
  };
}

async function graphileSystem(pgs: BenchPostgres): Promise<System> {
  const url = await pgs.createDatabase("bench_graphile");
  await runMigrations({ connectionString: url, logger: quietGraphileLogger([]) });
  const pool = benchPool(url);
  // Completed jobs are deleted; whatever is left for the task is outstanding (or failed).
  const outstanding = `
    SELECT count(*) AS n, count(*) FILTER (WHERE j.last_error IS NOT NULL) AS failed
    FROM graphile_worker._private_jobs j JOIN graphile_worker._private_tasks t ON t.id = j.task_id
    WHERE t.identifier = $1`;
  return {
    name: "graphile-worker",
    endpoint: url,
    pool,
    broker: null,
    redis: null,
    settle: () => settle(pool, ["graphile_worker._private_jobs"]),
    prepareQueue: async () => {},
    remaining: async (queue) => num((await pool.query(outstanding, [queue])).rows[0].n),
    verify: async (queue) => {
      const r = (await pool.query(outstanding, [queue])).rows[0];
      const problems: string[] = [];
      if (num(r.n) !== 0) problems.push(`${num(r.n)} jobs not completed`);
      if (num(r.failed) !== 0) problems.push(`${num(r.failed)} jobs failed at least once`);
      return problems;
    },
    purge: async (queue) => {
      await pool.query(
        "DELETE FROM graphile_worker._private_jobs j USING graphile_worker._private_tasks t WHERE t.id = j.task_id AND t.identifier = $1",
        [queue],
      );
    },
    close: async () => {
      await pool.end();
    },
  };
}

async function pgBossSystem(pgs: BenchPostgres): Promise<System> {
  const url = await pgs.createDatabase("bench_pgboss");
  const boss: PgBoss = await startBoss(url, { role: "setup" });
  const pool = benchPool(url);
  return {
    name: "pg-boss",
    endpoint: url,
    pool,
    broker: null,
    redis: null,
    settle: () => settle(pool, ["pgboss.job"]),
    prepareQueue: async (queue) => {
      await boss.createQueue(queue);
    },
    remaining: async (queue) =>
      num((await pool.query("SELECT count(*) AS n FROM pgboss.job WHERE name = $1 AND state IN ('created', 'retry', 'active')", [queue])).rows[0].n),
    verify: async (queue, expected) => {
      const { rows } = await pool.query(
        `SELECT count(*) AS total, count(*) FILTER (WHERE state = 'completed') AS completed,
                count(*) FILTER (WHERE retry_count > 0) AS retried
         FROM pgboss.job WHERE name = $1`,
        [queue],
      );
      const r = rows[0];
      const problems: string[] = [];
      if (num(r.total) !== expected) problems.push(`${num(r.total)} jobs in the table, expected ${expected}`);
      if (num(r.completed) !== expected) problems.push(`${num(r.completed)} completed, expected ${expected}`);
      if (num(r.retried) !== 0) problems.push(`${num(r.retried)} jobs were retried`);
      return problems;
    },
    purge: async (queue) => {
      await boss.deleteQueue(queue);
    },
    close: async () => {
      await boss.stop({ graceful: false, close: true, wait: true });
      await pool.end();
    },
  };
}

/**
 * BullMQ on its own redis-server. Completed jobs are removed as they finish
 * (peers.ts), so whatever is left in a queue is outstanding or failed.
 * Queues are made on first use; the bench keeps one Queue per name for its
 * counts.
 */
async function bullmqSystem(redisDir: string, durable: boolean): Promise<System> {
  const redis = await startRedis(redisDir, durable);
  let Queue: typeof import("bullmq").Queue;
  try {
    ({ Queue } = await import("bullmq"));
  } catch (err) {
    await redis.stop();
    throw err;
  }
  const queues = new Map<string, InstanceType<typeof Queue>>();
  const queueOf = (name: string) => {
    let q = queues.get(name);
    if (!q) {
      q = new Queue(name, { connection: { host: redis.host, port: redis.port } });
      queues.set(name, q);
    }
    return q;
  };
  const sum = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
  return {
    name: "bullmq",
    endpoint: redis.url,
    pool: null,
    broker: null,
    redis,
    settle: async () => {},
    prepareQueue: async (queue) => {
      await queueOf(queue).waitUntilReady();
    },
    remaining: async (queue) => sum(await queueOf(queue).getJobCounts("wait", "active", "delayed", "prioritized", "waiting-children")),
    verify: async (queue) => {
      const c = await queueOf(queue).getJobCounts("wait", "active", "delayed", "prioritized", "waiting-children", "failed", "completed");
      const problems: string[] = [];
      const left = sum(c) - (c.failed ?? 0) - (c.completed ?? 0);
      if (left !== 0) problems.push(`${left} jobs not completed`);
      if ((c.failed ?? 0) !== 0) problems.push(`${c.failed} jobs failed`);
      // removeOnComplete count 0: a completed job that was kept means the tuning did not apply.
      if ((c.completed ?? 0) !== 0) problems.push(`${c.completed} completed jobs were kept, expected none`);
      return problems;
    },
    purge: async (queue) => {
      await queueOf(queue).obliterate({ force: true });
    },
    close: async () => {
      for (const q of queues.values()) await q.close().catch(() => {});
      await redis.stop();
    },
  };
}

export interface OpenOptions {
  pgs: BenchPostgres;
  brokerExecArgv: string[];
  keepHistory: boolean;
  /** Where BullMQ's redis-server keeps its files (inside the bench's temporary folder). */
  redisDir: string;
  durable: boolean;
}

export async function openSystem(name: SystemName, o: OpenOptions): Promise<System> {
  switch (name) {
    case "jobwire":
      return jobwireSystem(o.pgs, o.brokerExecArgv, o.keepHistory);
    case "graphile-worker":
      return graphileSystem(o.pgs);
    case "pg-boss":
      return pgBossSystem(o.pgs);
    case "bullmq":
      return bullmqSystem(o.redisDir, o.durable);
  }
}
