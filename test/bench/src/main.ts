/**
 * `npm run bench`: jobwire's benchmark.
 *
 * Starts one embedded Postgres (the same settings for every system, each
 * system in its own database), the broker as a real process, and workers
 * and producers as separate processes over loopback; runs the scenarios in
 * order, printing one row per scenario (and per peer) and writing
 * bench-results/<scenario>.json. Exits 1 if any scenario broke (a job lost,
 * run twice, an error, a timeout), never because of speed.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO_ROOT } from "./broker.js";
import { BULLMQ_VERSION, GRAPHILE_TUNING, bullmqTuning, pgBossTuning } from "./peers.js";
import { parseOptions, USAGE, UsageError, type Options, type ScenarioName, type SystemName } from "./options.js";
import { resetStatements, startPostgres, topStatements, type BenchPostgres } from "./postgres.js";
import { rssMb } from "./procstats.js";
import { Progress } from "./progress.js";
import { RedisUnavailable, redisSettings } from "./redis.js";
import { machine, Report } from "./report.js";
import { runBulkEnqueue } from "./scenarios/bulk-enqueue.js";
import { runBurnDown } from "./scenarios/burn-down.js";
import type { Ctx } from "./scenarios/common.js";
import { runHistory } from "./scenarios/history.js";
import { runLatency } from "./scenarios/latency.js";
import { runFairness, runLimits } from "./scenarios/flow.js";
import { runResources } from "./scenarios/resources.js";
import { runSteadyState } from "./scenarios/steady-state.js";
import { runWorkerBudget } from "./scenarios/worker-budget.js";
import { openSystem, type System } from "./systems.js";

/** Scenarios that need neither Postgres nor a broker; they run last. */
type Standalone = "worker-budget";
const RUNNERS: Record<Exclude<ScenarioName, Standalone>, (ctx: Ctx) => Promise<void>> = {
  "burn-down": runBurnDown,
  "steady-state": runSteadyState,
  latency: runLatency,
  limits: runLimits,
  fairness: runFairness,
  "bulk-enqueue": runBulkEnqueue,
  history: runHistory,
  resources: runResources,
};
/** Scenarios in which the peers run too. */
const PEER_SCENARIOS: ScenarioName[] = ["burn-down", "latency"];

async function main(): Promise<number> {
  let opts: Options;
  try {
    const parsed = parseOptions(process.argv.slice(2), path.join(REPO_ROOT, "bench-results"));
    if (parsed === "help") {
      process.stdout.write(USAGE);
      return 0;
    }
    opts = parsed;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`bench: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    throw err;
  }
  const runPeers = opts.scenarios.some((s) => PEER_SCENARIOS.includes(s));
  const systemsToOpen: SystemName[] = runPeers ? opts.systems : ["jobwire"];
  const withDatabase = sortScenarios(opts.scenarios).filter((s): s is Exclude<ScenarioName, Standalone> => s in RUNNERS);
  const standalone = opts.scenarios.includes("worker-budget");
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "jobwire-bench-"));
  const profileDir = path.join(opts.out, "profiles");
  const progress = new Progress(opts.progress);
  const systems = new Map<SystemName, System>();
  let pgs: BenchPostgres | null = null;
  let brokerPeakMb = 0;
  let rssTimer: NodeJS.Timeout | undefined;

  const cleanup = async () => {
    clearInterval(rssTimer);
    for (const s of [...systems.values()].reverse()) await s.close().catch((e) => process.stderr.write(`bench: closing ${s.name}: ${e}\n`));
    systems.clear();
    await pgs?.stop().catch(() => {});
    if (opts.profile && pgs && existsSync(pgs.logFile)) {
      mkdirSync(profileDir, { recursive: true });
      copyFileSync(pgs.logFile, path.join(profileDir, "postgres.log"));
    }
    pgs = null;
    if (!opts.keep) rmSync(dataDir, { recursive: true, force: true });
  };
  const onSignal = () => {
    process.stderr.write("\nbench: interrupted; stopping the broker and Postgres\n");
    void cleanup().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    const profArgs = (name: string) => (opts.profile ? ["--cpu-prof", `--cpu-prof-dir=${path.join(profileDir, name)}`] : []);
    let report: Report;
    if (withDatabase.length === 0) {
      // worker-budget alone: no Postgres, no broker.
      const context = { machine: machine("not started"), source: sourceState(), options: opts };
      process.stdout.write(`${headline(context.source, context.machine, opts)}\n\n`);
      report = new Report(opts, context);
    } else {
      progress.note("starting Postgres...");
      pgs = await startPostgres(dataDir, { durable: opts.durable, profile: opts.profile, binDir: opts.pgBin });
      const skipped: string[] = [];
      for (const name of systemsToOpen) {
        progress.note(`starting ${name}...`);
        try {
          systems.set(
            name,
            await openSystem(name, {
              pgs,
              brokerExecArgv: profArgs("broker"),
              keepHistory: opts.keepHistory,
              redisDir: path.join(dataDir, "redis"),
              durable: opts.durable,
            }),
          );
        } catch (err) {
          // No Redis is no failure: BullMQ is left out of this run, with a note.
          if (!(err instanceof RedisUnavailable)) throw err;
          skipped.push(`BullMQ skipped: ${err.message}`);
          opts.systems = opts.systems.filter((s) => s !== name);
        }
      }
      progress.clear();
      const broker = systems.get("jobwire")!.broker!;
      rssTimer = setInterval(() => (brokerPeakMb = Math.max(brokerPeakMb, rssMb(broker.pid))), 100);
      rssTimer.unref();
      const redis = systems.get("bullmq")?.redis;

      const context = {
        machine: machine(pgs.version),
        source: sourceState(),
        postgres: { settings: pgs.settings, fsync: opts.durable ? "on" : "off (same for every system; --durable turns it on)" },
        options: opts,
        jobwire: {
          broker: broker.settings,
          workerConcurrency: opts.concurrency,
          workers: opts.workers,
          completedRetention: opts.keepHistory ? "broker default (24 h)" : "0: deleted at ack, as graphile-worker does",
        },
        peers: {
          "graphile-worker": { version: "0.17.3", ...GRAPHILE_TUNING, workers: opts.workers },
          "pg-boss": { version: "10.4.2", ...pgBossTuning(), workers: opts.workers },
          bullmq: redis
            ? { version: BULLMQ_VERSION, redis: redis.version, redisSettings: redis.settings, ...bullmqTuning(opts.concurrency), workers: opts.workers }
            : { skipped: skipped[0] ?? "not selected", redisSettings: redisSettings(opts.durable) },
        },
      };
      const m = context.machine;
      process.stdout.write(
        `${headline(context.source, m, opts)}` +
          ` (fsync ${opts.durable ? "on" : "off"}, jit ${pgs.settings.jit}${opts.pgBin ? `, from ${opts.pgBin}` : ""}, same settings for every system)\n` +
          `${opts.workers} worker processes x concurrency ${opts.concurrency}; broker, workers, producers and Postgres share the ${m.cpus} cores\n` +
          `jobwire completed-job retention: ${context.jobwire.completedRetention}\n` +
          (redis ? `BullMQ ${BULLMQ_VERSION} on Redis ${redis.version} (its own redis-server on loopback, persistence ${opts.durable ? "AOF, fsync per write" : "off"})\n` : "") +
          skipped.map((l) => `${l}\n`).join("") +
          "\n",
      );
      report = new Report(opts, context);
      const ctx: Ctx = {
        opts,
        pg: pgs,
        systems,
        progress,
        report,
        workerExecArgv: (name) => (name === "jobwire" ? profArgs("worker") : []),
        producerExecArgv: (name) => (name === "jobwire" ? profArgs("producer") : []),
        usage: new Map(),
        burnDown: new Map(),
        brokerPeakMb: () => brokerPeakMb,
      };
      for (const scenario of withDatabase) {
        if (opts.profile) for (const s of systems.values()) if (s.pool) await resetStatements(s.pool);
        await RUNNERS[scenario](ctx);
        if (opts.profile) {
          const statements: Record<string, unknown> = {};
          for (const s of systems.values()) if (s.pool) statements[s.name] = await topStatements(s.pool);
          report.amend(scenario, { pgStatStatements: statements });
        }
      }
    }
    if (standalone) await runWorkerBudget(opts, report, profArgs("worker-budget"));
    report.summary();
    return report.failures.length > 0 ? 1 : 0;
  } finally {
    progress.clear();
    await cleanup();
  }
}

/** The commit measured, and the files that differed from it (read-only git calls; no git in the tree is fine). */
function sourceState(): { commit: string; modified: string[] } {
  const git = (...args: string[]) => execFileSync("git", ["-C", REPO_ROOT, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  try {
    // Porcelain lines are "XY path": the path starts at column 3.
    const modified = git("status", "--porcelain", "--", "server", "clients/typescript", "proto")
      .split("\n")
      .filter((l) => l.length > 3)
      .map((l) => l.slice(3));
    return { commit: git("rev-parse", "--short", "HEAD").trim(), modified };
  } catch {
    return { commit: "unknown", modified: [] };
  }
}

/** The first header line: what was measured, on what. */
function headline(src: { commit: string; modified: string[] }, m: ReturnType<typeof machine>, opts: Options): string {
  return (
    `jobwire ${src.commit}${src.modified.length ? ` + ${src.modified.length} modified files` : ""}, bench${opts.quick ? " (--quick)" : ""}: ` +
    `${m.cpus} x ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.kernel}, Node ${m.node}, Postgres ${m.postgres}`
  );
}

function sortScenarios(list: ScenarioName[]): ScenarioName[] {
  const order = [...Object.keys(RUNNERS), "worker-budget"] as ScenarioName[];
  return [...list].sort((a, b) => order.indexOf(a) - order.indexOf(b));
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
