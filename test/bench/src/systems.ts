/**
 * The bench process's handle on each system's database: install its schema,
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
import { benchPool, type BenchPostgres } from "./postgres.js";
import { JOB_TYPE } from "./senders.js";

export interface System {
  name: SystemName;
  /** What workers and producers connect to: the broker's address, or the database URL. */
  endpoint: string;
  pool: pg.Pool;
  /** Tables to VACUUM ANALYZE between scenarios. */
  tables: string[];
  broker: BrokerProcess | null;
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
    tables: ["jobwire.jobs"],
    broker,
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
    tables: ["graphile_worker._private_jobs"],
    broker: null,
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
    tables: ["pgboss.job"],
    broker: null,
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

export async function openSystem(name: SystemName, pgs: BenchPostgres, brokerExecArgv: string[], keepHistory: boolean): Promise<System> {
  switch (name) {
    case "jobwire":
      return jobwireSystem(pgs, brokerExecArgv, keepHistory);
    case "graphile-worker":
      return graphileSystem(pgs);
    case "pg-boss":
      return pgBossSystem(pgs);
  }
}
