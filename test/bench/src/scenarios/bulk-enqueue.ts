/**
 * Scenario 4, bulk enqueue (jobwire): one producer process sends batch
 * Enqueue calls of 1000 jobs, 4 in flight, and nothing consumes them.
 * Afterwards the jobs are checked (all there, all available) and deleted.
 */
import { Fleet } from "../fleet.js";
import { BULK_BATCH, BULK_IN_FLIGHT } from "../options.js";
import { startMeter } from "../procstats.js";
import type { ProducerResult, ProducerSpec } from "../protocol.js";
import { fmtInt, fmtMs, summarize } from "../stats.js";
import { ScenarioError } from "../util.js";
import { awaitQuiet, freshQueue, noiseNote, settleSystem, system, type Ctx } from "./common.js";

export const BULK_TARGET = 50_000;

export async function runBulkEnqueue(ctx: Ctx): Promise<void> {
  const s = system(ctx, "jobwire");
  const queue = freshQueue("bulk");
  const total = ctx.opts.bulkJobs;
  await settleSystem(s);
  const spec: ProducerSpec = {
    role: "producer",
    system: "jobwire",
    endpoint: s.endpoint,
    queue,
    mode: "bulk",
    firstIndex: 0,
    concurrency: BULK_IN_FLIGHT,
    seconds: 0,
    rate: 0,
    total,
    batch: BULK_BATCH,
  };
  const producer = new Fleet<ProducerResult>("bulk-enqueue producer", [spec], ctx.producerExecArgv("jobwire"));
  try {
    await producer.ready();
    await awaitQuiet(ctx);
    const meter = startMeter({ broker: s.broker!.pid, postgres: ctx.pg.pid, workers: () => 0, producers: () => producer.cpuSeconds() });
    const t0 = performance.now();
    producer.go();
    const progress = setInterval(() => ctx.progress.update("bulk-enqueue", producer.progress, total, t0), 200);
    let p: ProducerResult;
    try {
      [p] = (await producer.results(120_000 + total / 10)) as [ProducerResult];
    } finally {
      clearInterval(progress);
      ctx.progress.clear();
    }
    const usage = meter.stop();
    if (p.errors.length > 0) throw new ScenarioError(`producer: ${p.errors[0]}`);
    const { rows } = await s.pool!.query(
      "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'available') AS available FROM jobwire.jobs WHERE queue = $1",
      [queue],
    );
    const problems: string[] = [];
    if (Number(rows[0].n) !== total) problems.push(`${rows[0].n} jobs in the table, expected ${total}`);
    if (Number(rows[0].available) !== total) problems.push(`${rows[0].available} available, expected ${total}`);
    const jobsPerSecond = total / (p.elapsedMs / 1000);
    const call = summarize(p.callMs);
    ctx.usage.set("bulk-enqueue", { jobs: total, usage });
    ctx.report.add({
      scenario: "bulk-enqueue",
      system: "jobwire",
      result: `${fmtInt(jobsPerSecond)} jobs/s (${fmtInt(total)} in calls of ${BULK_BATCH}, ${BULK_IN_FLIGHT} in flight; call p50 ${fmtMs(call.p50)})${noiseNote(usage)}`,
      targets: [{ goal: `>= ${fmtInt(BULK_TARGET)} jobs/s`, measured: fmtInt(jobsPerSecond), pass: jobsPerSecond >= BULK_TARGET }],
      ...(problems.length > 0 ? { error: problems.join("; ") } : {}),
    });
    ctx.report.json("bulk-enqueue", {
      jobs: total,
      batch: BULK_BATCH,
      inFlight: BULK_IN_FLIGHT,
      seconds: p.elapsedMs / 1000,
      jobsPerSecond: Math.round(jobsPerSecond),
      callMs: call,
      usage,
      problems,
    });
    await s.purge(queue);
  } catch (err) {
    ctx.report.add({ scenario: "bulk-enqueue", system: "jobwire", result: "", targets: [], error: err instanceof Error ? err.message : String(err) });
    ctx.report.json("bulk-enqueue", { error: String(err) });
  } finally {
    producer.kill();
  }
}
