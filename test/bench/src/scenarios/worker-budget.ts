/**
 * worker-budget (jobwire): the TypeScript Worker's own CPU per no-op job,
 * fed by an in-process stand-in for the broker (budget/), in a process of
 * its own. Needs neither Postgres nor the broker, so a run of this scenario
 * alone starts neither.
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { BudgetResult } from "../budget/measure.js";
import type { Options } from "../options.js";
import type { Report } from "../report.js";
import { fmtInt } from "../stats.js";
import { cleanEnv, withTimeout } from "../util.js";

/** Issue 15: a no-op job should cost a TypeScript worker under 10 us of CPU. */
export const WORKER_BUDGET_US = 10;
/** Setting up and warming up take a few seconds; the run itself ~15 us x jobs on this box. */
const TIMEOUT_BASE_MS = 60_000;
const TIMEOUT_PER_JOB_MS = 0.2;
/** Share of the machine other processes may use during the measured run before the row says it was noisy. */
const NOISY_SHARE = 0.1;

const MAIN = fileURLToPath(new URL("../budget/main.js", import.meta.url));

export async function runWorkerBudget(opts: Options, report: Report, execArgv: string[]): Promise<void> {
  const goal = `< ${WORKER_BUDGET_US} us CPU/job`;
  try {
    const r = await measure(opts.budgetJobs, opts.concurrency, execArgv);
    const gcUs = (r.gcMs * 1000) / r.jobs;
    const noisy = r.otherCpuShare > NOISY_SHARE ? ` [noisy: other processes used ${Math.round(r.otherCpuShare * 100)}% of the CPU]` : "";
    report.add({
      scenario: "worker-budget",
      system: "jobwire",
      result:
        `${r.cpuPerJobUs.toFixed(1)} us CPU/job (${fmtInt(r.jobs)} no-op jobs, in-process stand-in, no wire; ` +
        `${fmtInt(r.jobsPerSecond)} jobs/s; GC pauses ${gcUs.toFixed(1)} us/job; ${r.jobsPerBatch} jobs/batch, ${r.jobsPerAck}/ack on the ${r.acks === "stream" ? "stream" : "Ack call"})${noisy}`,
      targets: [{ goal, measured: `${r.cpuPerJobUs.toFixed(1)} us`, pass: r.cpuPerJobUs < WORKER_BUDGET_US }],
      ...(r.problems.length > 0 ? { error: r.problems.join("; ") } : {}),
    });
    report.json("worker-budget", { result: r, target: { goal, pass: r.cpuPerJobUs < WORKER_BUDGET_US } });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    report.add({ scenario: "worker-budget", system: "jobwire", result: "", targets: [], error: message });
    report.json("worker-budget", { error: message });
  }
}

function measure(jobs: number, concurrency: number, execArgv: string[]): Promise<BudgetResult> {
  const proc = fork(MAIN, [], {
    env: cleanEnv({ BENCH_BUDGET: JSON.stringify({ jobs, concurrency }) }),
    execArgv: ["--expose-gc", ...execArgv],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const result = new Promise<BudgetResult>((resolve, reject) => {
    proc.on("message", (m: { type: "result"; result: BudgetResult } | { type: "failed"; message: string }) => {
      if (m.type === "result") resolve(m.result);
      else reject(new Error(m.message));
    });
    proc.once("exit", (code, signal) => reject(new Error(`the worker-budget process exited (${signal ?? code}) without a result`)));
  });
  return withTimeout(result, TIMEOUT_BASE_MS + jobs * TIMEOUT_PER_JOB_MS, "worker-budget: no result").finally(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
  });
}
