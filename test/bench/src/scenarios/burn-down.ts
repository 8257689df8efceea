/**
 * Scenario 1, burn-down: N no-op jobs pre-enqueued in batches of 1000, then
 * the clock runs until every one is acked. Run for jobwire and each peer
 * (graphile-worker and pg-boss on the same Postgres, BullMQ on its own
 * Redis); jobwire's throughput as a ratio to each peer is the headline
 * figure. Each row also splits the CPU per job by process group, measured
 * over the drain only (from "go" to the last job done; the pre-enqueue is
 * outside it): broker, Postgres, Redis and workers, whichever the system has.
 */
import type { SystemName } from "../options.js";
import { fmtInt, fmtRatio } from "../stats.js";
import type { Row, Target } from "../report.js";
import { burnDown, freshQueue, noiseNote, system, type BurnDownResult, type Ctx } from "./common.js";

/** The targets against the peers (jobwire's throughput over theirs). BullMQ's ratio is reported, with no target. */
export const RATIO_TARGETS: Partial<Record<SystemName, number>> = { "graphile-worker": 1.2, "pg-boss": 5 };
/** Issue 15: the broker's own CPU per job in a burn-down. */
export const BROKER_BUDGET_US = 8;

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

/** CPU per job of each process group, in microseconds, over the drain. */
export interface CpuSplit {
  broker: number | null;
  /** null for BullMQ, whose run does not use Postgres. */
  postgres: number | null;
  redis: number | null;
  workers: number;
  total: number;
}

/**
 * CPU per job of the processes the system runs on (broker, Postgres, Redis,
 * workers; whichever it has), in microseconds: the figure that noise from
 * other processes hardly moves. BullMQ's leaves Postgres out: what Postgres
 * does meanwhile is the idle jobwire broker's housekeeping.
 */
export function cpuSplit(r: BurnDownResult): CpuSplit {
  const u = r.usage;
  const us = (cpuSeconds: number) => Math.round((cpuSeconds / r.jobs) * 1e7) / 10;
  const broker = u.broker ? us(u.broker.cpuSeconds) : null;
  const redis = u.redis ? us(u.redis.cpuSeconds) : null;
  const postgres = u.redis ? null : us(u.postgres.cpuSeconds);
  const workers = us(u.workers.cpuSeconds);
  return { broker, postgres, redis, workers, total: Math.round((broker ?? 0) + (postgres ?? 0) + (redis ?? 0) + workers) };
}

export function cpuPerJobUs(r: BurnDownResult): number {
  return cpuSplit(r).total;
}

/** "broker 12.6 + Postgres 16.6 + workers 20.8 = 50 us CPU/job" */
function splitText(c: CpuSplit): string {
  const parts: string[] = [];
  if (c.broker !== null) parts.push(`broker ${c.broker.toFixed(1)}`);
  if (c.postgres !== null) parts.push(`Postgres ${c.postgres.toFixed(1)}`);
  if (c.redis !== null) parts.push(`Redis ${c.redis.toFixed(1)}`);
  parts.push(`workers ${c.workers.toFixed(1)}`);
  return `${parts.join(" + ")} = ${c.total} us CPU/job`;
}

export function burnDownResultText(r: BurnDownResult): string {
  return `${fmtInt(r.jobsPerSecond)} jobs/s (${fmtInt(r.jobs)} jobs in ${r.seconds.toFixed(2)} s; ${splitText(cpuSplit(r))})${noiseNote(r.usage)}${r.warnings.count > 0 ? ` [${r.warnings.count} worker warnings, e.g. "${r.warnings.first[0]}"]` : ""}`;
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
        const broker = cpuSplit(r).broker ?? NaN;
        row.targets = [{ goal: `broker < ${BROKER_BUDGET_US} us CPU/job`, measured: `${broker.toFixed(1)} us`, pass: broker < BROKER_BUDGET_US }];
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
  const peers = ctx.opts.systems.filter((s) => s !== "jobwire");
  const ratios = Object.fromEntries(
    peers.map((peer) => {
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
  const cpu = Object.fromEntries(Object.entries(results).map(([name, r]) => [name, cpuSplit(r)]));
  ctx.report.json("burn-down", { jobs: n, warmupJobs: warmupJobs(n), results, cpuPerJobUs: cpu, errors, ratios, targets });
}
