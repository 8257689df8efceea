/**
 * Scenario 1, burn-down: N no-op jobs pre-enqueued in batches of 1000, then
 * the clock runs until every one is acked. Run for jobwire and each peer on
 * the same Postgres; jobwire's throughput as a ratio to each peer is the
 * headline figure.
 */
import type { SystemName } from "../options.js";
import { fmtInt, fmtRatio } from "../stats.js";
import type { Row, Target } from "../report.js";
import { burnDown, freshQueue, noiseNote, system, type BurnDownResult, type Ctx } from "./common.js";

/** The targets against the peers (jobwire's throughput over theirs). */
export const RATIO_TARGETS: Partial<Record<SystemName, number>> = { "graphile-worker": 1.2, "pg-boss": 5 };

/**
 * An untimed burn-down before each measured one, so that no system is
 * measured cold (first-run JIT in the broker and workers, Postgres's plan
 * caches and catalog caches).
 */
export function warmupJobs(n: number): number {
  return Math.min(10_000, Math.max(1_000, Math.round(n / 10)));
}

export async function warmUp(ctx: Ctx, name: SystemName): Promise<void> {
  const r = await burnDown(ctx, system(ctx, name), freshQueue("warm-up"), warmupJobs(ctx.opts.jobs), `warm-up ${name}`);
  if (r.problems.length > 0) throw new Error(`warm-up: ${r.problems.join("; ")}`);
}

/** Broker + Postgres + worker CPU per job, in microseconds: the figure that noise from other processes hardly moves. */
export function cpuPerJobUs(r: BurnDownResult): number {
  const u = r.usage;
  return Math.round((((u.broker?.cpuSeconds ?? 0) + u.postgres.cpuSeconds + u.workers.cpuSeconds) / r.jobs) * 1e6);
}

export function burnDownResultText(r: BurnDownResult): string {
  return `${fmtInt(r.jobsPerSecond)} jobs/s (${fmtInt(r.jobs)} jobs in ${r.seconds.toFixed(2)} s; ${cpuPerJobUs(r)} us CPU/job)${noiseNote(r.usage)}${r.warnings.count > 0 ? ` [${r.warnings.count} worker warnings, e.g. "${r.warnings.first[0]}"]` : ""}`;
}

export async function runBurnDown(ctx: Ctx): Promise<void> {
  const n = ctx.opts.jobs;
  const results: Partial<Record<SystemName, BurnDownResult>> = {};
  const errors: Partial<Record<SystemName, string>> = {};
  for (const name of ctx.opts.systems) {
    const row: Row = { scenario: "burn-down", system: name, result: "", targets: [] };
    try {
      await warmUp(ctx, name);
      const r = await burnDown(ctx, system(ctx, name), freshQueue("burn-down"), n, `burn-down ${name}`);
      results[name] = r;
      row.result = burnDownResultText(r);
      if (r.problems.length > 0) row.error = r.problems.join("; ");
      if (name === "jobwire") {
        ctx.burnDown.set(name, r.jobsPerSecond);
        ctx.usage.set("burn-down", { jobs: n, usage: r.usage });
      }
    } catch (err) {
      row.error = err instanceof Error ? err.message : String(err);
      errors[name] = row.error;
    }
    ctx.report.add(row);
  }

  const jw = results.jobwire;
  const targets: Target[] = Object.entries(RATIO_TARGETS).map(([peer, goal]) => {
    const p = results[peer as SystemName];
    const ratio = jw && p ? jw.jobsPerSecond / p.jobsPerSecond : NaN;
    return { goal: `>= ${goal}x ${peer}`, measured: fmtRatio(ratio), pass: Number.isFinite(ratio) ? ratio >= goal! : null };
  });
  const ratios = Object.fromEntries(
    Object.keys(RATIO_TARGETS).map((peer) => {
      const p = results[peer as SystemName];
      return [peer, jw && p ? Math.round((jw.jobsPerSecond / p.jobsPerSecond) * 100) / 100 : null];
    }),
  );
  ctx.report.add({
    scenario: "headline",
    system: "jobwire / peer",
    result: `burn-down throughput ratio: ${Object.entries(ratios).map(([p, r]) => `${fmtRatio(r ?? NaN)} ${p}`).join(", ")}`,
    targets,
  });
  ctx.report.json("burn-down", { jobs: n, warmupJobs: warmupJobs(n), results, errors, ratios, targets });
}
