/**
 * Scenario 2, steady state (jobwire): producer processes keep 32 single-job
 * Enqueue calls in flight between them while the workers process. Reports
 * the sustained processing rate after a warm-up, the enqueue rate, and the
 * Enqueue RPC latency (call to return, as the producer sees it).
 */
import { Fleet } from "../fleet.js";
import { STEADY_CONCURRENCY } from "../options.js";
import { startMeter } from "../procstats.js";
import type { ProducerResult, ProducerSpec } from "../protocol.js";
import { fmtInt, fmtMs, summarize } from "../stats.js";
import { ScenarioError, sleep } from "../util.js";
import { awaitQuiet, drainBudgetMs, freshQueue, noiseNote, warningNote, settleSystem, system, tally, waitDrained, workerFleet, type Ctx } from "./common.js";

/** Producer p hands out indices from p * this. */
const INDEX_STRIDE = 100_000_000;
/** The rate is taken after this share of the window (at most 2 s), once both sides run flat out. */
const WARMUP_SHARE = 0.2;
const SAMPLE_MS = 100;

export async function runSteadyState(ctx: Ctx): Promise<void> {
  const s = system(ctx, "jobwire");
  const queue = freshQueue("steady");
  await s.prepareQueue(queue);
  const seconds = ctx.opts.steadySeconds;
  const nProducers = ctx.opts.producers;
  await settleSystem(s);
  const workers = workerFleet(ctx, s, queue, false, "steady-state workers");
  const specs: ProducerSpec[] = Array.from({ length: nProducers }, (_, p) => ({
    role: "producer",
    system: "jobwire",
    endpoint: s.endpoint,
    queue,
    mode: "closed-loop",
    firstIndex: p * INDEX_STRIDE,
    // 32 in all, spread as evenly as the division allows.
    concurrency: Math.floor(STEADY_CONCURRENCY / nProducers) + (p < STEADY_CONCURRENCY % nProducers ? 1 : 0),
    seconds,
    rate: 0,
    total: 0,
    batch: 1,
  }));
  const producers = new Fleet<ProducerResult>("steady-state producers", specs, ctx.producerExecArgv("jobwire"));
  try {
    await Promise.all([workers.ready(), producers.ready()]);
    workers.go();
    await sleep(500);
    await awaitQuiet(ctx);
    const meter = startMeter({ broker: s.broker!.pid, postgres: ctx.pg.pid, workers: () => workers.cpuSeconds(), producers: () => producers.cpuSeconds() });
    const series: { t: number; enqueued: number; processed: number }[] = [];
    const t0 = performance.now();
    producers.go();
    const sampler = setInterval(() => {
      series.push({ t: performance.now() - t0, enqueued: producers.progress, processed: workers.progress });
      ctx.progress.update("steady-state", Math.round((performance.now() - t0) / 1000), seconds, t0);
    }, SAMPLE_MS);
    let results: ProducerResult[];
    try {
      results = await Promise.race([producers.results(seconds * 1000 + 30_000), workers.failed()]);
    } finally {
      clearInterval(sampler);
      ctx.progress.clear();
    }
    const windowEnd = performance.now() - t0;
    for (const r of results) if (r.errors.length > 0) throw new ScenarioError(`producer: ${r.errors[0]}`);
    const enqueued = results.reduce((a, r) => a + r.sent, 0);
    const backlogAtEnd = enqueued - workers.progress;
    const tDrained = await waitDrained(ctx, s, queue, workers, () => enqueued, t0, drainBudgetMs(enqueued), "steady-state drain");
    const usage = meter.stop();
    const wres = await workers.stop();
    const t = tally(wres, results.map((r, p) => ({ first: p * INDEX_STRIDE, count: r.sent })), true);
    const problems = [...t.problems, ...(await s.verify(queue, enqueued))];

    // Rates over [warm-up, end of window], from the 100 ms samples.
    const warm = Math.min(2000, windowEnd * WARMUP_SHARE);
    const a = series.find((x) => x.t >= warm) ?? series[0]!;
    const b = series[series.length - 1]!;
    const span = (b.t - a.t) / 1000;
    const processedPerSecond = (b.processed - a.processed) / span;
    const enqueuedPerSecond = (b.enqueued - a.enqueued) / span;
    const rpc = summarize(Float64Array.from(results.flatMap((r) => Array.from(r.callMs))));
    const data = {
      seconds,
      producers: nProducers,
      callsInFlight: STEADY_CONCURRENCY,
      enqueued,
      processedPerSecond: Math.round(processedPerSecond),
      enqueuedPerSecond: Math.round(enqueuedPerSecond),
      backlogAtEnd,
      drainSeconds: Math.round(tDrained - t0 - windowEnd) / 1000,
      enqueueRpcMs: rpc,
      usage,
      problems,
      warnings: t.warnings,
    };
    ctx.usage.set("steady-state", { jobs: enqueued, usage });
    const row = {
      scenario: "steady-state" as const,
      system: "jobwire",
      result: `${fmtInt(processedPerSecond)} jobs/s processed, ${fmtInt(enqueuedPerSecond)}/s enqueued; Enqueue p50 ${fmtMs(rpc.p50)} p99 ${fmtMs(rpc.p99)}${noiseNote(usage)}${warningNote(t)}`,
      targets: [],
      ...(problems.length > 0 ? { error: problems.join("; ") } : {}),
    };
    ctx.report.add(row);
    ctx.report.json("steady-state", data);
  } catch (err) {
    ctx.report.add({ scenario: "steady-state", system: "jobwire", result: "", targets: [], error: err instanceof Error ? err.message : String(err) });
    ctx.report.json("steady-state", { error: String(err) });
  } finally {
    workers.kill();
    producers.kill();
  }
}
