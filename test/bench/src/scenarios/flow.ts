/**
 * Scenarios 7 and 8, flow control (issue 11), jobwire only: what the
 * gated claim costs, and how fair it is.
 *
 * limits: the same burn-down twice in one run, back to back: N plain jobs
 * with no limits, then N jobs spread over 1,000 concurrency keys with
 * max_running_per_key 5. Target: the limited rate is at least 70% of the
 * unlimited one.
 *
 * fairness: key A holds a backlog of N jobs and the workers are busy on it;
 * then single jobs under key B arrive, one at a time. For each, the time from
 * its Enqueue call to its handler's start. Without fairness B would wait
 * behind A's whole backlog; with it, a claim or two.
 */
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { startMeter } from "../procstats.js";
import { now, type Payload } from "../protocol.js";
import type { Row } from "../report.js";
import { JOB_TYPE } from "../senders.js";
import { fmtInt, fmtMs, fmtRatio, summarize } from "../stats.js";
import { sleep } from "../util.js";
import {
  awaitQuiet,
  burnDown,
  drainBudgetMs,
  freshQueue,
  PRE_ENQUEUE_BATCH,
  PRE_ENQUEUE_IN_FLIGHT,
  settleSystem,
  system,
  tally,
  waitDrained,
  workerFleet,
  type Ctx,
} from "./common.js";
import { burnDownResultText, cpuPerJobUs, warmUp } from "./burn-down.js";

export const LIMITS_TARGET = 0.7;
const LIMIT_KEYS = 1000;
const PER_KEY = 5;
/** Fairness: single key-B jobs, one every FAIRNESS_GAP_MS while key A's backlog drains. */
const FAIRNESS_TRIES = 7;
const FAIRNESS_GAP_MS = 200;

/** Enqueues jobs first .. first + n - 1 with a concurrency key per job, through gRPC (untimed). */
async function enqueueKeyed(endpoint: string, queue: string, first: number, n: number, keyOf: (i: number) => string): Promise<void> {
  const jobs = createClient(JobService, createGrpcTransport({ baseUrl: endpoint }));
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const from = next;
      const k = Math.min(PRE_ENQUEUE_BATCH, n - from);
      next += k;
      await jobs.enqueue({
        jobs: Array.from({ length: k }, (_, j) => {
          const i = first + from + j;
          return create(JobSpecSchema, {
            queue,
            type: JOB_TYPE,
            payload: new TextEncoder().encode(JSON.stringify({ i } satisfies Payload)),
            concurrencyKey: keyOf(i),
          });
        }),
      });
    }
  };
  await Promise.all(Array.from({ length: PRE_ENQUEUE_IN_FLIGHT }, lane));
}

export async function runLimits(ctx: Ctx): Promise<void> {
  const s = system(ctx, "jobwire");
  const n = ctx.opts.jobs;
  const row: Row = { scenario: "limits", system: "jobwire", result: "", targets: [] };
  try {
    await warmUp(ctx, "jobwire");
    const free = await burnDown(ctx, s, freshQueue("limits-free"), n, "limits: unlimited");

    const queue = freshQueue("limits");
    await s.prepareQueue(queue);
    await createClient(AdminService, createGrpcTransport({ baseUrl: s.endpoint })).setQueueConfig({ queue, maxRunningPerKey: PER_KEY });
    await enqueueKeyed(s.endpoint, queue, 0, n, (i) => `key-${i % LIMIT_KEYS}`);
    await settleSystem(s);
    const workers = workerFleet(ctx, s, queue, false, "limits: 1,000 keys, 5 each");
    let limitedRate = NaN;
    let limitedText = "";
    try {
      await workers.ready();
      await awaitQuiet(ctx);
      const meter = startMeter({ broker: s.broker!.pid, postgres: ctx.pg.pid, workers: () => workers.cpuSeconds(), producers: () => 0 });
      const t0 = performance.now();
      workers.go();
      const t1 = await waitDrained(ctx, s, queue, workers, () => n, t0, drainBudgetMs(n), "limits: 1,000 keys, 5 each");
      const usage = meter.stop();
      const t = tally(await workers.stop(), [{ first: 0, count: n }], true);
      const problems = [...t.problems, ...(await s.verify(queue, n))];
      if (problems.length > 0) row.error = problems.join("; ");
      const seconds = (t1 - t0) / 1000;
      limitedRate = n / seconds;
      limitedText = burnDownResultText({ jobs: n, seconds, jobsPerSecond: limitedRate, usage, problems, warnings: t.warnings });
    } finally {
      workers.kill();
    }
    const ratio = limitedRate / free.jobsPerSecond;
    row.result = `max_running_per_key ${PER_KEY} over ${fmtInt(LIMIT_KEYS)} keys: ${limitedText}; unlimited: ${burnDownResultText(free)}`;
    row.targets = [{ goal: `>= ${LIMITS_TARGET}x unlimited`, measured: fmtRatio(ratio), pass: Number.isFinite(ratio) ? ratio >= LIMITS_TARGET : null }];
    ctx.report.json("limits", {
      jobs: n,
      keys: LIMIT_KEYS,
      perKey: PER_KEY,
      unlimited: { jobsPerSecond: free.jobsPerSecond, cpuPerJobUs: cpuPerJobUs(free) },
      limited: { jobsPerSecond: limitedRate },
      ratio,
    });
  } catch (err) {
    row.error = err instanceof Error ? err.message : String(err);
  }
  ctx.report.add(row);
}

export async function runFairness(ctx: Ctx): Promise<void> {
  const s = system(ctx, "jobwire");
  const n = ctx.opts.jobs;
  const row: Row = { scenario: "fairness", system: "jobwire", result: "", targets: [] };
  try {
    const queue = freshQueue("fairness");
    await s.prepareQueue(queue);
    await enqueueKeyed(s.endpoint, queue, 0, n, () => "A");
    await settleSystem(s);
    const workers = workerFleet(ctx, s, queue, true, "fairness: key A's backlog");
    const calls = new Map<number, number>();
    try {
      await workers.ready();
      const t0 = performance.now();
      workers.go();
      // Once the workers are busy on A, B's jobs arrive one at a time.
      while (workers.progress < Math.min(n / 10, 2000)) await sleep(5);
      const jobs = createClient(JobService, createGrpcTransport({ baseUrl: s.endpoint }));
      for (let t = 0; t < FAIRNESS_TRIES; t++) {
        const i = n + t;
        calls.set(i, now());
        await jobs.enqueue({
          jobs: [
            create(JobSpecSchema, {
              queue,
              type: JOB_TYPE,
              payload: new TextEncoder().encode(JSON.stringify({ i } satisfies Payload)),
              concurrencyKey: "B",
            }),
          ],
        });
        await sleep(FAIRNESS_GAP_MS);
      }
      const total = n + FAIRNESS_TRIES;
      await waitDrained(ctx, s, queue, workers, () => total, t0, drainBudgetMs(total), "fairness");
      const results = await workers.stop();
      const t = tally(results, [{ first: 0, count: total }], true);
      if (t.problems.length > 0) row.error = t.problems.join("; ");
      const starts = new Map<number, number>();
      for (const r of results) r.handled.forEach((i, k) => starts.set(i, r.starts[k]!));
      const waits = [...calls].map(([i, call]) => (starts.get(i) ?? NaN) - call);
      const sum = summarize(waits.filter(Number.isFinite));
      row.result = `key B's job behind key A's ${fmtInt(n)}-job backlog: waited p50 ${fmtMs(sum.p50)}, max ${fmtMs(sum.max)} over ${sum.count} tries (Enqueue call to handler start)`;
      ctx.report.json("fairness", { backlog: n, tries: FAIRNESS_TRIES, waitMs: sum });
    } finally {
      workers.kill();
    }
  } catch (err) {
    row.error = err instanceof Error ? err.message : String(err);
  }
  ctx.report.add(row);
}
