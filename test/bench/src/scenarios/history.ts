/**
 * Scenario 5, history (jobwire): burn-down again, with 1,000,000 completed
 * jobs already in the table, in the same queue. Throughput must stay within
 * 20% of the empty-table burn-down of the same run.
 *
 * The history is inserted directly (one INSERT ... SELECT per 100,000 rows)
 * and vacuumed: the tidy case. A table that grew through real updates also
 * carries dead tuples until autovacuum catches up.
 */
import { fmtInt } from "../stats.js";
import { burnDown, freshQueue, system, type Ctx } from "./common.js";
import { burnDownResultText, warmUp } from "./burn-down.js";

/** Throughput with history, over throughput without, must be at least this. */
export const HISTORY_TARGET = 0.8;
const INSERT_CHUNK = 100_000;

export async function runHistory(ctx: Ctx): Promise<void> {
  const s = system(ctx, "jobwire");
  const n = ctx.opts.jobs;
  const rows = ctx.opts.historyRows;
  try {
    let baseline = ctx.burnDown.get("jobwire");
    let baselineUsage = ctx.usage.get("burn-down");
    let baselineNote = "scenario 1 of this run";
    if (baseline === undefined) {
      // Run alone: measure the empty-table figure first, in this run.
      await warmUp(ctx, "jobwire");
      const b = await burnDown(ctx, s, freshQueue("burn-down"), n, "history baseline");
      if (b.problems.length > 0) throw new Error(`baseline burn-down: ${b.problems.join("; ")}`);
      baseline = b.jobsPerSecond;
      baselineUsage = { jobs: b.jobs, usage: b.usage };
      baselineNote = "a burn-down run just before, in this scenario";
    }
    const queue = freshQueue("history");
    const t0 = performance.now();
    for (let from = 1; from <= rows; from += INSERT_CHUNK) {
      const to = Math.min(rows, from + INSERT_CHUNK - 1);
      await s.pool!.query(
        `INSERT INTO jobwire.jobs (state, attempt, max_attempts, run_at, created_at, finished_at, queue, type, payload)
         SELECT 'completed', 1, 25, t, t, t + interval '5 ms', $1, 'history', convert_to('{"i":' || g || '}', 'UTF8')
         FROM generate_series($2::int, $3::int) AS g, LATERAL (SELECT now() - interval '1 day' + g * interval '50 ms' AS t) AS ts`,
        [queue, from, to],
      );
      ctx.progress.update("history: inserting completed jobs", to, rows, t0);
    }
    ctx.progress.clear();
    const fillSeconds = (performance.now() - t0) / 1000;
    const r = await burnDown(ctx, s, queue, n, "history burn-down");
    const ratio = r.jobsPerSecond / baseline;
    // CPU per job (broker + Postgres + workers) hardly moves with noise from
    // other processes, so it tells a real slowdown from a noisy run.
    const cpuUs = (u: typeof r.usage, jobs: number) =>
      Math.round((((u.broker?.cpuSeconds ?? 0) + u.postgres.cpuSeconds + u.workers.cpuSeconds) / jobs) * 1e6);
    const cpuPerJobUs = { empty: baselineUsage ? cpuUs(baselineUsage.usage, baselineUsage.jobs) : null, history: cpuUs(r.usage, n) };
    ctx.usage.set("history", { jobs: n, usage: r.usage });
    const size = await s.pool!.query("SELECT pg_size_pretty(pg_total_relation_size('jobwire.jobs')) AS total, pg_size_pretty(pg_relation_size('jobwire.jobs')) AS heap");
    ctx.report.add({
      scenario: "history",
      system: "jobwire",
      result:
        `${burnDownResultText(r)} with ${fmtInt(rows)} completed rows;` +
        ` ${(ratio * 100).toFixed(0)}% of empty (which took ${cpuPerJobUs.empty ?? "n/a"} us CPU/job)`,
      targets: [{ goal: `>= ${HISTORY_TARGET * 100}% of burn-down`, measured: `${(ratio * 100).toFixed(0)}%`, pass: ratio >= HISTORY_TARGET }],
      ...(r.problems.length > 0 ? { error: r.problems.join("; ") } : {}),
    });
    ctx.report.json("history", {
      historyRows: rows,
      fillSeconds: Math.round(fillSeconds * 10) / 10,
      tableSize: size.rows[0],
      result: r,
      baselineJobsPerSecond: Math.round(baseline),
      baseline: baselineNote,
      ratio: Math.round(ratio * 1000) / 1000,
      cpuPerJobUs,
    });
  } catch (err) {
    ctx.report.add({ scenario: "history", system: "jobwire", result: "", targets: [], error: err instanceof Error ? err.message : String(err) });
    ctx.report.json("history", { error: String(err) });
  }
}
