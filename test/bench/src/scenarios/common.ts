/**
 * What the scenarios share: the run context, starting worker fleets,
 * pre-enqueueing, waiting for a queue to drain, and counting that every job
 * ran exactly once.
 */
import type { Options, ScenarioName, SystemName } from "../options.js";
import { Fleet } from "../fleet.js";
import type { BenchPostgres } from "../postgres.js";
import { machineCpuSeconds, startMeter, type Meter, type Usage } from "../procstats.js";
import os from "node:os";
import type { Progress } from "../progress.js";
import type { ProducerResult, WorkerResult, WorkerSpec } from "../protocol.js";
import type { Report } from "../report.js";
import { openSender } from "../senders.js";
import type { System } from "../systems.js";
import { ScenarioError, sleep } from "../util.js";

export interface Ctx {
  opts: Options;
  pg: BenchPostgres;
  systems: Map<SystemName, System>;
  progress: Progress;
  report: Report;
  /** Node flags for worker processes of a system (--cpu-prof under --profile). */
  workerExecArgv(system: SystemName): string[];
  /** Node flags for producer processes of a system. */
  producerExecArgv(system: SystemName): string[];
  /** Broker usage per scenario, for the resources scenario. */
  usage: Map<ScenarioName, { jobs: number; usage: ReturnType<Meter["stop"]> }>;
  /** The broker's largest RSS seen so far (sampled every 100 ms for the whole run), MB. */
  brokerPeakMb(): number;
  /** Results kept for later scenarios (history compares with burn-down). */
  burnDown: Map<SystemName, number>;
}

export function system(ctx: Ctx, name: SystemName): System {
  const s = ctx.systems.get(name);
  if (!s) throw new Error(`system ${name} is not open`);
  return s;
}

/** A queue name no earlier scenario used, so counts and checks see only this scenario's jobs. */
let queueSeq = 0;
export function freshQueue(scenario: string): string {
  return `${scenario.replace(/[^a-z0-9]/g, "_")}_${++queueSeq}`;
}

/** Pre-enqueue calls: jobs per call, calls in flight. */
export const PRE_ENQUEUE_BATCH = 1000;
export const PRE_ENQUEUE_IN_FLIGHT = 4;
/** How often the bench asks the database whether a drained queue is done. */
const DONE_POLL_MS = 10;
/** A drain is given this long at least, plus 1 s per this many jobs. */
const DRAIN_BASE_MS = 60_000;
const DRAIN_MIN_RATE = 500;

export function drainBudgetMs(jobs: number): number {
  return DRAIN_BASE_MS + (jobs / DRAIN_MIN_RATE) * 1000;
}

/** Enqueues jobs first .. first + n - 1 through the system's own batch API, from the bench process (untimed). */
export async function preEnqueue(ctx: Ctx, s: System, queue: string, n: number, first = 0): Promise<void> {
  const sender = await openSender(s.name, s.endpoint, queue);
  let next = 0;
  let done = 0;
  const t0 = performance.now();
  try {
    const lane = async () => {
      while (next < n) {
        const from = next;
        const k = Math.min(PRE_ENQUEUE_BATCH, n - from);
        next += k;
        await sender.many(first + from, k);
        done += k;
        ctx.progress.update(`${s.name}: enqueue`, done, n, t0);
      }
    };
    await Promise.all(Array.from({ length: PRE_ENQUEUE_IN_FLIGHT }, lane));
  } finally {
    await sender.close();
    ctx.progress.clear();
  }
}

export function workerFleet(ctx: Ctx, s: System, queue: string, recordStarts: boolean, label: string): Fleet<WorkerResult> {
  const spec = (): WorkerSpec => ({
    role: "worker",
    system: s.name,
    endpoint: s.endpoint,
    queue,
    concurrency: ctx.opts.concurrency,
    recordStarts,
  });
  return new Fleet<WorkerResult>(label, Array.from({ length: ctx.opts.workers }, spec), ctx.workerExecArgv(s.name));
}

/** Share of the machine's CPU that other processes may use during a measurement before its row is marked noisy. */
const NOISY_SHARE = 0.1;

/** " [noisy: ...]" when other processes took a noticeable share of the CPU during the measurement. */
export function noiseNote(u: Usage): string {
  const share = u.otherCpuSeconds / (u.wallSeconds * os.cpus().length);
  return share > NOISY_SHARE ? ` [noisy: other processes used ${Math.round(share * 100)}% of the CPU]` : "";
}

/** Idle share the machine must show (over QUIET_SAMPLE_MS) before a measurement starts, outside --quick. */
const QUIET_BUSY_SHARE = 0.15;
const QUIET_SAMPLE_MS = 500;
const QUIET_MAX_WAIT_MS = 60_000;

/**
 * Before a full-size measurement, waits (up to a minute) for the machine to
 * be quiet: this box is shared, and another session's test suite running
 * alongside halves every figure. Returns the seconds waited.
 */
export async function awaitQuiet(ctx: Ctx): Promise<number> {
  if (ctx.opts.quick) return 0;
  const t0 = performance.now();
  const cores = os.cpus().length;
  while (performance.now() - t0 < QUIET_MAX_WAIT_MS) {
    const a = machineCpuSeconds().busy;
    await sleep(QUIET_SAMPLE_MS);
    const share = (machineCpuSeconds().busy - a) / ((QUIET_SAMPLE_MS / 1000) * cores);
    if (share < QUIET_BUSY_SHARE) break;
    ctx.progress.note(`waiting for a quiet machine (${Math.round(share * 100)}% busy)...`);
  }
  ctx.progress.clear();
  return Math.round(performance.now() - t0) / 1000;
}

/** Vacuum, analyse and checkpoint the system's tables so the next measurement starts clean. */
export async function settleSystem(s: System): Promise<void> {
  await s.settle();
}

/** What startMeter measures for a system: its broker or Redis beside Postgres. */
export function servicePids(ctx: Ctx, s: System): { broker?: number; postgres: number; redis?: number } {
  return { ...(s.broker ? { broker: s.broker.pid } : {}), postgres: ctx.pg.pid, ...(s.redis ? { redis: s.redis.pid } : {}) };
}

/**
 * Waits until the workers report `expected` jobs done and the database has
 * none outstanding; returns the time (performance.now()) the database first
 * said so. Rejects if a worker fails or the budget runs out.
 */
export async function waitDrained(
  ctx: Ctx,
  s: System,
  queue: string,
  workers: Fleet<WorkerResult>,
  expected: () => number,
  t0: number,
  budgetMs: number,
  label: string,
): Promise<number> {
  const deadline = t0 + budgetMs;
  const failed = workers.failed();
  const loop = async (): Promise<number> => {
    for (;;) {
      const done = workers.progress;
      ctx.progress.update(label, done, expected(), t0);
      if (done >= expected() && (await s.remaining(queue)) === 0) return performance.now();
      if (performance.now() > deadline) {
        const left = await s.remaining(queue);
        throw new ScenarioError(`${label}: ${left} jobs still outstanding after ${Math.round(budgetMs / 1000)} s (${done} of ${expected()} reported done)`);
      }
      await sleep(DONE_POLL_MS);
    }
  };
  try {
    return await Promise.race([loop(), failed]);
  } finally {
    ctx.progress.clear();
  }
}

export interface Tally {
  /** Jobs whose handler ran exactly once. */
  once: number;
  problems: string[];
  /** Warnings the workers logged (not failures), first few and a count. */
  warnings: { count: number; first: string[] };
}

/** " [N worker warnings: ...]" for a row, when any were logged. */
export function warningNote(t: Tally): string {
  return t.warnings.count > 0 ? ` [${t.warnings.count} worker warnings, e.g. "${t.warnings.first[0]}"]` : "";
}

/**
 * Systems whose worker hears back that each completion was stored: jobwire
 * (the broker answered the Ack) and BullMQ (its "completed" event follows
 * the job's move to completed in Redis). graphile-worker and pg-boss
 * complete in batches the worker does not report per job.
 */
export function confirmsCompletion(name: SystemName): boolean {
  return name === "jobwire" || name === "bullmq";
}

/**
 * Every index in `expected` must have been handled exactly once across all
 * workers, and nothing else handled; where the system confirms each
 * completion to the worker (confirmsCompletion), every job must also have
 * been confirmed.
 */
export function tally(results: WorkerResult[], expected: { first: number; count: number }[], mustAck: boolean): Tally {
  const problems: string[] = [];
  const seen = new Map<number, number>();
  let handled = 0;
  let acked = 0;
  const warnings = { count: 0, first: [] as string[] };
  for (const r of results) {
    warnings.count += r.warnings.length;
    warnings.first.push(...r.warnings.slice(0, 3 - warnings.first.length));
    handled += r.handled.length;
    acked += r.acked;
    for (const i of r.handled) seen.set(i, (seen.get(i) ?? 0) + 1);
    if (r.errors.length > 0) problems.push(`worker errors: ${r.errors.slice(0, 3).join(" | ")}${r.errors.length > 3 ? ` (+${r.errors.length - 3})` : ""}`);
  }
  let once = 0;
  let missing = 0;
  let repeated = 0;
  let total = 0;
  for (const { first, count } of expected) {
    total += count;
    for (let i = first; i < first + count; i++) {
      const c = seen.get(i) ?? 0;
      if (c === 1) once++;
      else if (c === 0) missing++;
      else repeated++;
      seen.delete(i);
    }
  }
  if (missing > 0) problems.push(`${missing} jobs never handled`);
  if (repeated > 0) problems.push(`${repeated} jobs handled more than once`);
  if (seen.size > 0) problems.push(`${seen.size} unexpected job indices handled`);
  if (mustAck && acked !== total) problems.push(`${acked} acks confirmed for ${total} jobs`);
  if (handled !== total && missing === 0 && repeated === 0 && seen.size === 0) problems.push(`${handled} handler runs for ${total} jobs`);
  return { once, problems, warnings };
}

export interface BurnDownResult {
  jobs: number;
  seconds: number;
  jobsPerSecond: number;
  usage: ReturnType<Meter["stop"]>;
  problems: string[];
  warnings: Tally["warnings"];
}

/**
 * Burn-down: `n` jobs already waiting; the workers start; the clock runs
 * from their "go" until the database has no job of the queue left
 * outstanding. Workers are started and connected before the clock starts;
 * whatever each runtime does on run() (open the Lease stream, graphile's
 * schema check, pg-boss's first poll) is inside the measurement.
 */
export async function burnDown(ctx: Ctx, s: System, queue: string, n: number, label: string): Promise<BurnDownResult> {
  await s.prepareQueue(queue);
  await preEnqueue(ctx, s, queue, n);
  await settleSystem(s);
  const workers = workerFleet(ctx, s, queue, false, `${label} workers`);
  try {
    await workers.ready();
    await awaitQuiet(ctx);
    const meter = startMeter({ ...servicePids(ctx, s), workers: () => workers.cpuSeconds(), producers: () => 0 });
    const t0 = performance.now();
    workers.go();
    const t1 = await waitDrained(ctx, s, queue, workers, () => n, t0, drainBudgetMs(n), label);
    const usage = meter.stop();
    const results = await workers.stop();
    const t = tally(results, [{ first: 0, count: n }], confirmsCompletion(s.name));
    const problems = [...t.problems, ...(await s.verify(queue, n))];
    const seconds = (t1 - t0) / 1000;
    return { jobs: n, seconds, jobsPerSecond: n / seconds, usage, problems, warnings: t.warnings };
  } finally {
    workers.kill();
  }
}

export type { ProducerResult };
