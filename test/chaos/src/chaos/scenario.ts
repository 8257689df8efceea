/**
 * One fault, start to end: a fresh database on the suite's Postgres,
 * broker replicas on fixed loopback ports, chaos workers pinned to them,
 * producers at a fixed rate. The fault runs while the load does; then
 * everything is healed (killed processes started again, Postgres up), the
 * queue drains until its deadline, and the checker sorts every acknowledged
 * job.
 */
import path from "node:path";
import type pg from "pg";
import { JobwireClient } from "@jobwire/client";
import { Broker } from "../common/broker.js";
import { harnessPool, type PgCluster } from "../common/postgres.js";
import { onCleanup } from "../common/cleanup.js";
import { pollUntil, sleep } from "../common/util.js";
import { check, type Tally } from "./checker.js";
import { Fleet } from "./fleet.js";
import type { ChaosOptions } from "./options.js";
import { Ledger, Producers } from "./producers.js";
import { RecoveryTracker, TERMINAL } from "./recovery.js";

export const QUEUE = "chaos";

export interface Topology {
  replicas: number;
  workersPerReplica: number;
  concurrency: number;
  /** Jobs per second, over all producers. */
  rate: number;
  /** How long the load (and the fault) runs. */
  loadMs: number;
}

/** What a fault sees while it runs. */
export interface FaultContext {
  opts: ChaosOptions;
  pg: PgCluster;
  databaseUrl: string;
  pool: pg.Pool;
  brokers: Broker[];
  fleet: Fleet;
  producers: Producers;
  recovery: RecoveryTracker;
  /** Job ids the fault inserted itself (not acknowledged enqueues), with what it expects of them. */
  fixtures: Map<string, string>;
  /** When the load window ends (ms since epoch). */
  loadEndsAt: number;
  /** Lines for the report, under the table. */
  notes: string[];
  log(msg: string): void;
}

export interface Fault {
  /** Short id for --only. */
  id: string;
  title: string;
  topology(opts: ChaosOptions): Topology;
  /** Runs the fault until ctx.loadEndsAt; returns how many events it injected. */
  run(ctx: FaultContext): Promise<number>;
  /** Checks the fault's own fixtures after the drain; returns problems (each fails the run). */
  checkFixtures?(ctx: FaultContext): Promise<string[]>;
}

export interface FaultResult {
  fault: Fault;
  topology: Topology;
  events: number;
  tally: Tally;
  recovery: RecoveryTracker;
  drainMs: number | null;
  fixtureProblems: string[];
  notes: string[];
  producerErrors: string;
  /** Codes producers saw besides UNAVAILABLE and DEADLINE_EXCEEDED (a warning, not a failure). */
  producerOddErrors: string[];
  brokerLog: string[];
  crashes: number;
  loadMs: number;
}

/**
 * Broker settings for every fault: reclaim and promote quickly, log only
 * problems. The keepalive is 1 s rather than 15 s because a Lease stream's
 * response headers arrive with its first message, and the worker reports
 * itself connected only then: on an empty queue, at the first keepalive.
 */
export const BROKER_ENV: Record<string, string> = {
  JOBWIRE_KEEPALIVE_MS: "1000",
  JOBWIRE_REAPER_INTERVAL_MS: "250",
  JOBWIRE_SCHEDULER_INTERVAL_MS: "250",
  JOBWIRE_POOL_SIZE: "8",
  JOBWIRE_LOG_LEVEL: "warn",
};

/**
 * Lease length of the chaos workers: a killed worker's jobs come back after
 * at most this plus one reaper pass. The worker heartbeats at a third of it.
 */
export const LEASE_MS = 3_000;
/** Retries wait 100 ms doubling to 1 s, so a reclaimed job runs again soon. */
const QUEUE_RETRY = { initialBackoffMs: 100, maxBackoffMs: 1_000, multiplier: 2, jitter: 0.2 };

export async function runFault(fault: Fault, pgc: PgCluster, runDir: string, opts: ChaosOptions, log: (m: string) => void): Promise<FaultResult> {
  const topo = fault.topology(opts);
  const databaseUrl = await pgc.createDatabase(`chaos_${fault.id.replace(/-/g, "_")}`);
  const pool = harnessPool(databaseUrl);
  await pool.query("CREATE SCHEMA chaos");
  await pool.query("CREATE TABLE chaos.effects (job_id bigint NOT NULL, attempt int NOT NULL, worker text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())");
  await pool.query("CREATE INDEX ON chaos.effects (job_id)");

  const brokers = Array.from(
    { length: topo.replicas },
    (_, i) => new Broker(`${fault.id}-b${i}`, { ...BROKER_ENV, DATABASE_URL: databaseUrl }, path.join(runDir, `${fault.id}-broker${i}.log`)),
  );
  const forget = onCleanup(async () => {
    await fleet?.stop();
    await Promise.all(brokers.map((b) => b.kill("SIGKILL").catch(() => {})));
  });
  let fleet: Fleet | undefined;
  try {
    return await drive(fault, topo, pgc, databaseUrl, pool, brokers, runDir, opts, log, (f) => (fleet = f));
  } finally {
    forget();
    await fleet?.stop().catch(() => {});
    for (const b of brokers) await b.stop().catch(() => {});
    for (const b of brokers) b.close();
    await pool.end().catch(() => {});
  }
}

async function drive(
  fault: Fault,
  topo: Topology,
  pgc: PgCluster,
  databaseUrl: string,
  pool: pg.Pool,
  brokers: Broker[],
  runDir: string,
  opts: ChaosOptions,
  log: (m: string) => void,
  register: (f: Fleet) => void,
): Promise<FaultResult> {
  // The first starts alone: it runs the migrations the others would wait for.
  await brokers[0]!.start();
  await Promise.all(brokers.slice(1).map((b) => b.start()));
  log(`${brokers.length} broker(s) listening`);
  const admin = new JobwireClient({ address: brokers[0]!.address });
  await admin.setQueueConfig(QUEUE, { retry: QUEUE_RETRY });
  admin.close();

  const fleet = new Fleet(
    { databaseUrl, queue: QUEUE, concurrency: topo.concurrency, leaseDurationMs: LEASE_MS, maxWorkMs: 20, logFile: path.join(runDir, `${fault.id}-workers.log`) },
    (r) => brokers[r]!.address,
  );
  register(fleet);
  const ledger = new Ledger();
  const producers = new Producers(
    brokers.map((b) => b.address),
    { queue: QUEUE, rate: topo.rate, maxInFlight: 64, jobDeadlineMs: opts.jobDeadlineMs, runId: fault.id },
    ledger,
  );
  const recovery = new RecoveryTracker(pool);
  const ctx: FaultContext = {
    opts,
    pg: pgc,
    databaseUrl,
    pool,
    brokers,
    fleet,
    producers,
    recovery,
    fixtures: new Map(),
    loadEndsAt: 0,
    notes: [],
    log,
  };
  let events = 0;
  let drainMs: number | null = null;
  let loadMs = 0;
  try {
    await fleet.start(Array.from({ length: topo.replicas * topo.workersPerReplica }, (_, i) => i % topo.replicas));
    log(`${fleet.size} workers connected; load and fault start`);
    const t0 = Date.now();
    ctx.loadEndsAt = t0 + topo.loadMs;
    producers.start();
    events = await fault.run(ctx);
    await producers.stop();
    loadMs = Date.now() - t0;
    log(`load over after ${(loadMs / 1000).toFixed(1)} s: ${ledger.acked.size} acknowledged; healing`);

    // Everything healthy again before the drain clock starts.
    await healAll(ctx);
    const drainStart = Date.now();
    const drainDeadline = drainStart + opts.drainMs;
    const drained = await pollUntil(async () => {
      const { rows } = await pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1 AND state::text <> ALL($2)",
        [QUEUE, TERMINAL],
      );
      return rows[0]!.n === 0;
    }, opts.drainMs, 200);
    drainMs = drained ? Date.now() - drainStart : null;
    log(drained ? `drained in ${(drainMs! / 1000).toFixed(1)} s` : `not drained within ${opts.drainMs / 1000} s`);
    await recovery.finish(drained ? Date.now() : drainDeadline);
  } finally {
    await producers.stop().catch(() => {});
    producers.close();
    await fleet.stop().catch(() => {});
  }
  const fixtureProblems = fault.checkFixtures ? await fault.checkFixtures(ctx) : [];
  const tally = await check(pool, QUEUE, ledger, new Set(ctx.fixtures.keys()));
  for (const b of brokers) await b.stop().catch(() => {});
  return {
    fault,
    topology: topo,
    events,
    tally,
    recovery,
    drainMs,
    fixtureProblems,
    notes: ctx.notes,
    producerErrors: ledger.errorSummary(),
    producerOddErrors: ledger.unexpectedErrors(),
    brokerLog: mergeLogs(brokers),
    crashes: brokers.reduce((a, b) => a + b.crashes.length, 0),
    loadMs,
  };
}

/** Postgres up, every broker running, every worker slot filled and connected. */
export async function healAll(ctx: FaultContext): Promise<void> {
  await ctx.pg.start();
  for (const b of ctx.brokers) if (!b.running) await b.start();
  await ctx.fleet.heal();
}

function mergeLogs(brokers: Broker[]): string[] {
  const all = new Map<string, number>();
  for (const b of brokers) for (const [k, v] of b.logs.counts) all.set(k, (all.get(k) ?? 0) + v);
  // Errors first (an INTERNAL answer is logged as one, with its cause), then the most frequent.
  const rank = (k: string) => (k.startsWith("error:") ? 0 : 1);
  return [...all.entries()].sort((a, b) => rank(a[0]) - rank(b[0]) || b[1] - a[1]).slice(0, 10).map(([k, v]) => `${v}× ${k}`);
}

/** Sleeps until `at` or the load window's end, whichever is first; false once the window is over. */
export async function until(ctx: FaultContext, at: number): Promise<boolean> {
  const t = Math.min(at, ctx.loadEndsAt);
  if (t > Date.now()) await sleep(t - Date.now());
  return Date.now() < ctx.loadEndsAt;
}
