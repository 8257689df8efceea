/**
 * Scenario 6, resources (jobwire): the broker's peak RSS and its CPU
 * seconds per 10,000 jobs, from the measurements taken around every other
 * jobwire scenario of this run (CPU from /proc/<pid>/stat utime + stime
 * deltas, peak RSS from VmHWM reset at each scenario's start). Postgres's
 * and the workers' CPU are listed beside it. Run alone, it measures a
 * burn-down first.
 */
import { fmtInt } from "../stats.js";
import { peakRssMb } from "../procstats.js";
import { burnDown, freshQueue, system, type Ctx } from "./common.js";
import { warmUp } from "./burn-down.js";

export const RSS_TARGET_MB = 250;

const per10k = (cpu: number, jobs: number) => Math.round((cpu / jobs) * 10_000 * 1000) / 1000;

export async function runResources(ctx: Ctx): Promise<void> {
  const s = system(ctx, "jobwire");
  try {
    if (ctx.usage.size === 0) {
      await warmUp(ctx, "jobwire");
      const r = await burnDown(ctx, s, freshQueue("burn-down"), ctx.opts.jobs, "resources burn-down");
      if (r.problems.length > 0) throw new Error(`burn-down: ${r.problems.join("; ")}`);
      ctx.usage.set("burn-down", { jobs: r.jobs, usage: r.usage });
    }
    const byScenario = Object.fromEntries(
      [...ctx.usage].map(([name, { jobs, usage }]) => [
        name,
        {
          jobs,
          wallSeconds: usage.wallSeconds,
          brokerCpuSeconds: usage.broker?.cpuSeconds ?? 0,
          brokerCpuPer10k: per10k(usage.broker?.cpuSeconds ?? 0, jobs),
          brokerPeakRssMb: usage.broker?.peakRssMb ?? 0,
          postgresCpuPer10k: per10k(usage.postgres.cpuSeconds, jobs),
          workersCpuPer10k: per10k(usage.workers.cpuSeconds, jobs),
          producersCpuPer10k: per10k(usage.producers.cpuSeconds, jobs),
        },
      ]),
    );
    const peak = Math.max(...Object.values(byScenario).map((u) => u.brokerPeakRssMb), peakRssMb(s.broker!.pid), ctx.brokerPeakMb());
    const bd = byScenario["burn-down"] ?? Object.values(byScenario)[0]!;
    const bdName = byScenario["burn-down"] ? "burn-down" : Object.keys(byScenario)[0]!;
    ctx.report.add({
      scenario: "resources",
      system: "jobwire",
      result: `broker peak RSS ${fmtInt(peak)} MB; CPU per 10k jobs (${bdName}): broker ${bd.brokerCpuPer10k} s, Postgres ${bd.postgresCpuPer10k} s, workers ${bd.workersCpuPer10k} s`,
      targets: [{ goal: `broker RSS < ${RSS_TARGET_MB} MB`, measured: `${fmtInt(peak)} MB`, pass: peak < RSS_TARGET_MB }],
    });
    ctx.report.json("resources", { brokerPeakRssMb: peak, byScenario });
  } catch (err) {
    ctx.report.add({ scenario: "resources", system: "jobwire", result: "", targets: [], error: err instanceof Error ? err.message : String(err) });
    ctx.report.json("resources", { error: String(err) });
  }
}
