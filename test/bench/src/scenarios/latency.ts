/**
 * Scenario 3, latency: one producer process enqueues single jobs at a fixed
 * 500 per second (open loop: each call starts on schedule, whatever the
 * earlier ones are doing) while the workers idle-wait. For each job, the
 * time from its Enqueue call returning (in the producer) to its handler
 * starting (in a worker): both stamped with performance.timeOrigin +
 * performance.now(), one clock on one machine. Run for each system.
 *
 * The targets are judged on the time from the Enqueue *call* to the handler
 * start, which is never shorter. "From return" goes negative when Enqueue
 * itself is slow (the job runs before the producer hears back), and a
 * negative p50 would "pass" while the producer waits a third of a second
 * per call. With a healthy Enqueue (about a millisecond) the two differ by
 * that millisecond.
 */
import { Fleet } from "../fleet.js";
import { LATENCY_RATE, type SystemName } from "../options.js";
import { startMeter } from "../procstats.js";
import type { ProducerResult, ProducerSpec } from "../protocol.js";
import type { Row, Target } from "../report.js";
import { fmtMs, summarize, type Summary } from "../stats.js";
import { ScenarioError, sleep } from "../util.js";
import { awaitQuiet, drainBudgetMs, freshQueue, noiseNote, warningNote, type Tally, settleSystem, system, tally, waitDrained, workerFleet, type Ctx } from "./common.js";

export const LATENCY_TARGETS = { p50: 5, p99: 15 };
/** Workers get this long after go to connect and go idle before the first job is sent. */
const IDLE_BEFORE_MS = 1000;

export interface LatencyResult {
  rate: number;
  seconds: number;
  jobs: number;
  /** Enqueue returned -> handler started, ms. */
  fromReturn: Summary;
  /** Enqueue called -> handler started, ms. */
  fromCall: Summary;
  /** Enqueue call duration, ms. */
  enqueueCall: Summary;
  /** Jobs whose handler started before the producer saw its Enqueue return (the broker was faster than the response). */
  startedBeforeReturn: number;
  usage: ReturnType<ReturnType<typeof startMeter>["stop"]>;
  problems: string[];
  warnings: Tally["warnings"];
}

async function measure(ctx: Ctx, name: SystemName): Promise<LatencyResult> {
  const s = system(ctx, name);
  const queue = freshQueue("latency");
  await s.prepareQueue(queue);
  await settleSystem(s);
  const seconds = ctx.opts.latencySeconds;
  const total = Math.ceil(LATENCY_RATE * seconds);
  const workers = workerFleet(ctx, s, queue, true, `latency ${name} workers`);
  const spec: ProducerSpec = {
    role: "producer",
    system: name,
    endpoint: s.endpoint,
    queue,
    mode: "paced",
    firstIndex: 0,
    concurrency: 0,
    seconds,
    rate: LATENCY_RATE,
    total,
    batch: 1,
  };
  const producer = new Fleet<ProducerResult>(`latency ${name} producer`, [spec], ctx.producerExecArgv(name));
  try {
    await Promise.all([workers.ready(), producer.ready()]);
    workers.go();
    await sleep(IDLE_BEFORE_MS);
    await awaitQuiet(ctx);
    const meter = startMeter({
      ...(s.broker ? { broker: s.broker.pid } : {}),
      postgres: ctx.pg.pid,
      workers: () => workers.cpuSeconds(),
      producers: () => producer.cpuSeconds(),
    });
    const t0 = performance.now();
    producer.go();
    const budget = drainBudgetMs(total) + seconds * 1000;
    const [p] = await Promise.race([producer.results(budget), workers.failed()]);
    if (p!.errors.length > 0) throw new ScenarioError(`producer: ${p!.errors[0]}`);
    await waitDrained(ctx, s, queue, workers, () => total, t0, budget, `latency ${name}`);
    const usage = meter.stop();
    const results = await workers.stop();
    const t = tally(results, [{ first: 0, count: total }], name === "jobwire");
    const problems = [...t.problems, ...(await s.verify(queue, total))];
    const start = new Float64Array(total).fill(NaN);
    for (const r of results) r.handled.forEach((i, k) => (start[i] = r.starts[k]!));
    const fromReturn: number[] = [];
    const fromCall: number[] = [];
    let early = 0;
    for (let i = 0; i < total; i++) {
      if (Number.isNaN(start[i]!)) continue;
      const d = start[i]! - p!.returnedAt[i]!;
      if (d < 0) early++;
      fromReturn.push(d);
      fromCall.push(start[i]! - p!.sentAt[i]!);
    }
    return {
      rate: LATENCY_RATE,
      seconds,
      jobs: total,
      fromReturn: summarize(fromReturn),
      fromCall: summarize(fromCall),
      enqueueCall: summarize(p!.callMs),
      startedBeforeReturn: early,
      usage,
      problems,
      warnings: t.warnings,
    };
  } finally {
    workers.kill();
    producer.kill();
  }
}

export async function runLatency(ctx: Ctx): Promise<void> {
  const results: Partial<Record<SystemName, LatencyResult>> = {};
  for (const name of ctx.opts.systems) {
    const row: Row = { scenario: "latency", system: name, result: "", targets: [] };
    try {
      const r = await measure(ctx, name);
      results[name] = r;
      const l = r.fromReturn;
      const c = r.fromCall;
      const early = r.startedBeforeReturn / r.jobs;
      row.result =
        `return->start p50 ${fmtMs(l.p50)} p99 ${fmtMs(l.p99)} max ${fmtMs(l.max)}; call->start p50 ${fmtMs(c.p50)} p99 ${fmtMs(c.p99)} max ${fmtMs(c.max)}` +
        (early > 0.01 ? `; ${Math.round(early * 100)}% ran before Enqueue returned (Enqueue p50 ${fmtMs(r.enqueueCall.p50)})` : "") +
        noiseNote(r.usage) +
        warningNote({ once: 0, problems: [], warnings: r.warnings });
      if (name === "jobwire") {
        row.targets = [
          { goal: `p50 <= ${LATENCY_TARGETS.p50} ms (call->start)`, measured: fmtMs(c.p50), pass: c.p50 <= LATENCY_TARGETS.p50 },
          { goal: `p99 <= ${LATENCY_TARGETS.p99} ms (call->start)`, measured: fmtMs(c.p99), pass: c.p99 <= LATENCY_TARGETS.p99 },
        ];
        ctx.usage.set("latency", { jobs: r.jobs, usage: r.usage });
      }
      if (r.problems.length > 0) row.error = r.problems.join("; ");
    } catch (err) {
      row.error = err instanceof Error ? err.message : String(err);
    }
    ctx.report.add(row);
  }
  const targets: Target[] = ctx.report.rows.filter((r) => r.scenario === "latency" && r.system === "jobwire").flatMap((r) => r.targets);
  ctx.report.json("latency", { rate: LATENCY_RATE, seconds: ctx.opts.latencySeconds, results, targets });
}
