/**
 * Scenario 3, latency: one producer process enqueues single jobs at a fixed
 * 500 per second (open loop: each call starts on schedule, whatever the
 * earlier ones are doing) while the workers idle-wait. Run for each system.
 * For each job, three figures, in p50 and p99:
 *
 *   - the enqueue call itself (call to return, in the producer): jobwire's
 *     Enqueue RPC, graphile-worker's addJob, pg-boss's send, BullMQ's add();
 *   - call->start: from the call being made to the handler starting;
 *   - return->start: from the call returning to the handler starting.
 *
 * Starts and calls are stamped with performance.timeOrigin +
 * performance.now(), one clock on one machine.
 *
 * The targets are judged on the time from the Enqueue *call* to the handler
 * start, which is never shorter. "From return" goes negative when Enqueue
 * itself is slow (the job runs before the producer hears back), and a
 * negative p50 would "pass" while the producer waits a third of a second
 * per call. With a healthy Enqueue (about a millisecond) the two differ by
 * that millisecond.
 */
import { histogramDelta, quantileBound, rpcHistogram } from "../broker-metrics.js";
import { Fleet } from "../fleet.js";
import { LATENCY_RATE, type SystemName } from "../options.js";
import { startMeter } from "../procstats.js";
import type { ProducerResult, ProducerSpec } from "../protocol.js";
import type { Row, Target } from "../report.js";
import { fmtMs, summarize, type Summary } from "../stats.js";
import { ENQUEUE_CALL } from "../senders.js";
import { ScenarioError, sleep } from "../util.js";
import {
  awaitQuiet,
  confirmsCompletion,
  drainBudgetMs,
  freshQueue,
  noiseNote,
  servicePids,
  settleSystem,
  system,
  tally,
  waitDrained,
  warningNote,
  workerFleet,
  type Ctx,
  type Tally,
} from "./common.js";

/** The standing targets on call->start. */
export const LATENCY_TARGETS = { p50: 5, p99: 15 };
/** Issue 15: a single Enqueue call's p50. */
export const ENQUEUE_P50_TARGET_MS = 0.5;
/** Issue 15: jobwire's call->start p99 no worse than the best of these peers' in the same run. */
export const LATENCY_PEERS: SystemName[] = ["bullmq", "graphile-worker"];
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
  /**
   * jobwire only: Enqueue as the broker timed it (its jobwire_rpc_duration_seconds
   * over the window): the bucket bounds p50 and p99 fall under, and the mean.
   * What the producer saw beyond this was the client, the wire and scheduling.
   */
  brokerEnqueue?: { p50AtMostMs: number; p99AtMostMs: number; meanMs: number; calls: number };
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
    const rpc0 = s.broker ? await rpcHistogram(s.broker.address, "Enqueue") : null;
    const meter = startMeter({ ...servicePids(ctx, s), workers: () => workers.cpuSeconds(), producers: () => producer.cpuSeconds() });
    const t0 = performance.now();
    producer.go();
    const budget = drainBudgetMs(total) + seconds * 1000;
    const [p] = await Promise.race([producer.results(budget), workers.failed()]);
    if (p!.errors.length > 0) throw new ScenarioError(`producer: ${p!.errors[0]}`);
    await waitDrained(ctx, s, queue, workers, () => total, t0, budget, `latency ${name}`);
    const usage = meter.stop();
    const rpc1 = s.broker ? await rpcHistogram(s.broker.address, "Enqueue") : null;
    const rpc = rpc0 && rpc1 ? histogramDelta(rpc0, rpc1) : null;
    const calls = rpc ? (rpc.counts[rpc.counts.length - 1] ?? 0) : 0;
    const results = await workers.stop();
    const t = tally(results, [{ first: 0, count: total }], confirmsCompletion(name));
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
      ...(rpc && calls > 0
        ? { brokerEnqueue: { p50AtMostMs: quantileBound(rpc, 0.5), p99AtMostMs: quantileBound(rpc, 0.99), meanMs: Math.round((rpc.sumMs / calls) * 1000) / 1000, calls } }
        : {}),
      usage,
      problems,
      warnings: t.warnings,
    };
  } finally {
    workers.kill();
    producer.kill();
  }
}

/** "Enqueue p50 1.33 ms p99 9.50 ms; call->start p50 ... p99 ...; return->start p50 ... p99 ..." */
function latencyText(name: SystemName, r: LatencyResult): string {
  const e = r.enqueueCall;
  const c = r.fromCall;
  const l = r.fromReturn;
  const early = r.startedBeforeReturn / r.jobs;
  return (
    `${ENQUEUE_CALL[name]} p50 ${fmtMs(e.p50)} p99 ${fmtMs(e.p99)}; call->start p50 ${fmtMs(c.p50)} p99 ${fmtMs(c.p99)} max ${fmtMs(c.max)}; ` +
    `return->start p50 ${fmtMs(l.p50)} p99 ${fmtMs(l.p99)}` +
    (early > 0.01 ? `; ${Math.round(early * 100)}% ran before the call returned` : "") +
    (r.brokerEnqueue
      ? `; in the broker: p50 <= ${fmtMs(r.brokerEnqueue.p50AtMostMs)}, p99 <= ${fmtMs(r.brokerEnqueue.p99AtMostMs)}, mean ${fmtMs(r.brokerEnqueue.meanMs)}`
      : "") +
    noiseNote(r.usage) +
    warningNote({ once: 0, problems: [], warnings: r.warnings })
  );
}

export async function runLatency(ctx: Ctx): Promise<void> {
  const results: Partial<Record<SystemName, LatencyResult>> = {};
  for (const name of ctx.opts.systems) {
    const row: Row = { scenario: "latency", system: name, result: "", targets: [] };
    try {
      const r = await measure(ctx, name);
      results[name] = r;
      row.result = latencyText(name, r);
      if (name === "jobwire") {
        const c = r.fromCall;
        row.targets = [
          { goal: `Enqueue p50 <= ${ENQUEUE_P50_TARGET_MS} ms`, measured: fmtMs(r.enqueueCall.p50), pass: r.enqueueCall.p50 <= ENQUEUE_P50_TARGET_MS },
          { goal: `call->start p50 <= ${LATENCY_TARGETS.p50} ms`, measured: fmtMs(c.p50), pass: c.p50 <= LATENCY_TARGETS.p50 },
          { goal: `call->start p99 <= ${LATENCY_TARGETS.p99} ms`, measured: fmtMs(c.p99), pass: c.p99 <= LATENCY_TARGETS.p99 },
        ];
        ctx.usage.set("latency", { jobs: r.jobs, usage: r.usage });
      }
      if (r.problems.length > 0) row.error = r.problems.join("; ");
    } catch (err) {
      row.error = err instanceof Error ? err.message : String(err);
    }
    ctx.report.add(row);
  }

  // jobwire against the best peer of the same run, once every system ran.
  const jw = results.jobwire;
  const best = LATENCY_PEERS.map((p) => ({ p, r: results[p] }))
    .filter((x): x is { p: SystemName; r: LatencyResult } => x.r !== undefined)
    .sort((a, b) => a.r.fromCall.p99 - b.r.fromCall.p99)[0];
  const headline: Target = {
    goal: `call->start p99 <= best peer's`,
    measured: jw && best ? `${fmtMs(jw.fromCall.p99)} vs ${fmtMs(best.r.fromCall.p99)}` : "n/a",
    pass: jw && best ? jw.fromCall.p99 <= best.r.fromCall.p99 : null,
  };
  if (jw) {
    ctx.report.add({
      scenario: "headline",
      system: "jobwire / peer",
      result: best
        ? `latency: call->start p99 ${fmtMs(jw.fromCall.p99)} against ${best.p}'s ${fmtMs(best.r.fromCall.p99)} (${(jw.fromCall.p99 / best.r.fromCall.p99).toFixed(2)}x); ` +
          `${ENQUEUE_CALL.jobwire} p50 ${fmtMs(jw.enqueueCall.p50)} against ${ENQUEUE_CALL[best.p]} ${fmtMs(best.r.enqueueCall.p50)}`
        : `latency: no peer of ${LATENCY_PEERS.join(", ")} ran`,
      targets: [headline],
    });
  }
  const targets: Target[] = ctx.report.rows
    .filter((r) => (r.scenario === "latency" && r.system === "jobwire") || (r.scenario === "headline" && r.result.startsWith("latency:")))
    .flatMap((r) => r.targets);
  ctx.report.json("latency", { rate: LATENCY_RATE, seconds: ctx.opts.latencySeconds, results, bestPeer: best?.p ?? null, targets });
}
