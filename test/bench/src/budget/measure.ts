/**
 * The TypeScript worker's CPU per no-op job, without Postgres or a broker:
 * a Worker from @jobwire/client, as a user configures it (no-op handler,
 * default ack batching), fed by the in-process stand-in (in-process.ts) as
 * fast as it takes jobs. CPU is process.cpuUsage() over the measured run:
 * every thread of this process (GC helpers included), and nothing else
 * runs here.
 *
 * A warm-up run of a tenth of the jobs (at least 10,000) goes first, on a
 * Worker of its own, so the measured one runs optimised code.
 *
 * Run in a process of its own (main.ts), started with --expose-gc so the
 * measured run starts on a collected heap.
 */
import { PerformanceObserver } from "node:perf_hooks";
import os from "node:os";
import { JobwireClient, Worker, silentLogger } from "@jobwire/client";
import { machineCpuSeconds } from "../procstats.js";
import { BUDGET_QUEUE, BUDGET_TYPE, encodeJobs } from "./jobs.js";
import { type AckPath, InProcessBroker } from "./in-process.js";

export interface BudgetResult {
  mode: "in-process";
  /** How the worker acked: on the Lease stream (what the broker offers) or with Ack calls (its fallback). */
  acks: AckPath;
  jobs: number;
  warmupJobs: number;
  concurrency: number;
  cpuUserMs: number;
  cpuSystemMs: number;
  /** (user + system) / jobs, in microseconds. */
  cpuPerJobUs: number;
  wallSeconds: number;
  jobsPerSecond: number;
  /** Lease batches handed out, and jobs per batch. */
  batches: number;
  jobsPerBatch: number;
  ackCalls: number;
  jobsPerAck: number;
  /** Main-thread GC pauses during the measured run. */
  gcCount: number;
  gcMs: number;
  heapUsedMb: number;
  /** CPU other processes used during the measured run, as a share of the machine (this box is shared). */
  otherCpuShare: number;
  /** Empty when every job was acked exactly once. */
  problems: string[];
}

export async function measureWorkerBudget(jobs: number, concurrency: number, acks: AckPath = "stream"): Promise<BudgetResult> {
  const warmupJobs = Math.max(10_000, Math.round(jobs / 10));
  const encoded = encodeJobs(warmupJobs + jobs, "budget-worker");
  const broker = new InProcessBroker(encoded, acks);

  const runWorker = async (first: number, n: number, measure: boolean) => {
    const client = new JobwireClient({ transport: broker.transport, logger: silentLogger });
    broker.attach(client);
    const errors: string[] = [];
    const worker = new Worker({
      client,
      queues: [BUDGET_QUEUE],
      concurrency,
      handleSignals: false,
      logger: { ...silentLogger, error: (m) => errors.push(m), warn: (m) => errors.push(m) },
      handlers: { [BUDGET_TYPE]: () => {} },
    });
    const gc = { count: 0, ms: 0 };
    const obs = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        gc.count++;
        gc.ms += e.duration;
      }
    });
    if (measure) {
      (globalThis as { gc?: () => void }).gc?.();
      obs.observe({ entryTypes: ["gc"] });
    }
    const m0 = machineCpuSeconds().busy;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const running = worker.run();
    await Promise.race([broker.run(first, n), running.then(() => Promise.reject(new Error(`the worker stopped early: ${errors[0] ?? "no error logged"}`)))]);
    const cpu = process.cpuUsage(cpu0);
    const wall = (performance.now() - t0) / 1000;
    const other = Math.max(0, machineCpuSeconds().busy - m0 - (cpu.user + cpu.system) / 1e6);
    obs.disconnect();
    await worker.stop();
    await running;
    client.close();
    return { cpu, wall, gc, errors, otherShare: other / (wall * os.cpus().length) };
  };

  const warm = await runWorker(0, warmupJobs, false);
  if (warm.errors.length > 0) throw new Error(`warm-up: ${warm.errors[0]}`);
  const acksBefore = broker.ackCalls;
  const batchesBefore = broker.batches;
  const r = await runWorker(warmupJobs, jobs, true);

  // Every measured job acked exactly once, and nothing else.
  const problems: string[] = r.errors.slice(0, 3);
  let missing = 0;
  let repeated = 0;
  for (let k = 0; k < warmupJobs + jobs; k++) {
    const c = broker.ackCount[k]!;
    if (c === 0) missing++;
    else if (c > 1) repeated++;
  }
  const foreign = broker.foreignAcks;
  if (missing > 0) problems.push(`${missing} jobs never acked`);
  if (repeated > 0) problems.push(`${repeated} jobs acked more than once`);
  if (foreign > 0) problems.push(`${foreign} acks of tokens that were never leased`);
  if (broker.nacks > 0) problems.push(`${broker.nacks} jobs nacked`);

  const cpuMs = (r.cpu.user + r.cpu.system) / 1000;
  const ackCalls = broker.ackCalls - acksBefore;
  const batches = broker.batches - batchesBefore;
  return {
    mode: "in-process",
    acks,
    jobs,
    warmupJobs,
    concurrency,
    cpuUserMs: Math.round(r.cpu.user / 1000),
    cpuSystemMs: Math.round(r.cpu.system / 1000),
    cpuPerJobUs: Math.round(((cpuMs * 1000) / jobs) * 100) / 100,
    wallSeconds: Math.round(r.wall * 1000) / 1000,
    jobsPerSecond: Math.round(jobs / r.wall),
    batches,
    jobsPerBatch: Math.round((jobs / Math.max(1, batches)) * 10) / 10,
    ackCalls,
    jobsPerAck: Math.round((jobs / Math.max(1, ackCalls)) * 10) / 10,
    gcCount: r.gc.count,
    gcMs: Math.round(r.gc.ms * 10) / 10,
    heapUsedMb: heapAfterGcMb(),
    otherCpuShare: Math.round(r.otherShare * 100) / 100,
    problems,
  };
}


/** Live heap after the run, collected first when --expose-gc allows: what the Worker keeps, not its garbage. */
function heapAfterGcMb(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return Math.round(process.memoryUsage().heapUsed / 2 ** 20);
}
