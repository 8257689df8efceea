/**
 * The worker-budget's process (see measure.ts):
 *
 *   node --expose-gc test/bench/dist/budget/main.js [--jobs N] [--concurrency N] [--unary-acks]
 *
 * prints the result as JSON. --unary-acks makes the stand-in refuse acks on
 * the Lease stream, so the worker falls back to Ack calls. The bench starts it the same way
 * (--scenario worker-budget), with the sizes in BENCH_BUDGET, and takes the
 * result over IPC.
 */
import { DEFAULT_BUDGET_JOBS, DEFAULT_CONCURRENCY } from "../options.js";
import { measureWorkerBudget } from "./measure.js";

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);
  return v;
}

const spec = process.env.BENCH_BUDGET ? (JSON.parse(process.env.BENCH_BUDGET) as { jobs: number; concurrency: number }) : null;
measureWorkerBudget(
  spec?.jobs ?? flag("jobs", DEFAULT_BUDGET_JOBS),
  spec?.concurrency ?? flag("concurrency", DEFAULT_CONCURRENCY),
  process.argv.includes("--unary-acks") ? "unary" : "stream",
).then(
  (result) => {
    if (process.send) process.send({ type: "result", result }, undefined, undefined, () => process.exit(0));
    else {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      process.exit(result.problems.length > 0 ? 1 : 0);
    }
  },
  (err) => {
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    if (process.send) process.send({ type: "failed", message }, undefined, undefined, () => process.exit(1));
    else {
      process.stderr.write(`worker-budget: ${message}\n`);
      process.exit(1);
    }
  },
);
