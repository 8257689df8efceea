/**
 * The bench's one typed configuration: flags, their named defaults, the
 * --quick preset, validated once before anything starts.
 */

export const SCENARIOS = ["burn-down", "steady-state", "latency", "bulk-enqueue", "history", "limits", "fairness", "resources", "worker-budget"] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export const SYSTEMS = ["jobwire", "graphile-worker", "pg-boss", "bullmq"] as const;
export type SystemName = (typeof SYSTEMS)[number];

/** Worker processes per system. Two, one per core: workers, broker and Postgres share the cores anyway. */
export const DEFAULT_WORKERS = 2;
/**
 * Handlers running at once in each worker process (jobwire's Worker
 * `concurrency`, which is also its Lease stream's max_in_flight). No-op jobs
 * finish in microseconds, so this mostly sets how many jobs each claim and
 * each Ack can batch. 100, 250 and 500 burned down within run-to-run noise
 * (4,700-6,200 jobs/s, 50,000 jobs) on the 2-core box; at 1000 the Worker
 * held over 10,000 un-acked leases and its single Heartbeat call was refused
 * (the broker takes at most 10,000 tokens per call).
 */
export const DEFAULT_CONCURRENCY = 250;
/** Scenario 1: jobs pre-enqueued, then burned down. */
export const DEFAULT_JOBS = 100_000;
/** Scenario 2: concurrent single-job Enqueue calls, split across producer processes. */
export const STEADY_CONCURRENCY = 32;
export const DEFAULT_PRODUCERS = 2;
export const DEFAULT_STEADY_SECONDS = 20;
/** Scenario 3: the fixed arrival rate. */
export const LATENCY_RATE = 500;
export const DEFAULT_LATENCY_SECONDS = 20;
/** Scenario 4: jobs per Enqueue call, calls in flight, jobs in all. */
export const BULK_BATCH = 1000;
export const BULK_IN_FLIGHT = 4;
export const DEFAULT_BULK_JOBS = 200_000;
/** Scenario 5: completed jobs already in the table. */
export const DEFAULT_HISTORY_ROWS = 1_000_000;
/**
 * worker-budget: no-op jobs fed to one TypeScript Worker from an in-process
 * fake Lease stream. 200,000 at ~10 us each is 2 s of CPU: long enough that
 * the 1 ms resolution of process.cpuUsage and one-off GC pauses vanish.
 */
export const DEFAULT_BUDGET_JOBS = 200_000;

/** --quick: every scenario and both peers in well under a minute, for CI smoke runs. */
const QUICK = {
  jobs: 5_000,
  steadySeconds: 3,
  latencySeconds: 3,
  bulkJobs: 20_000,
  historyRows: 50_000,
  budgetJobs: 50_000,
};

export interface Options {
  scenarios: ScenarioName[];
  systems: SystemName[];
  quick: boolean;
  jobs: number;
  workers: number;
  concurrency: number;
  producers: number;
  steadySeconds: number;
  latencySeconds: number;
  bulkJobs: number;
  historyRows: number;
  budgetJobs: number;
  /**
   * jobwire keeps completed jobs as history (the broker's default retention,
   * 24 h). Without it the bench's queues have a retention of zero: a job is
   * deleted when acked, as graphile-worker deletes its jobs.
   */
  keepHistory: boolean;
  /** fsync and synchronous_commit on (the default runs all systems with fsync off; see postgres.ts). */
  durable: boolean;
  /**
   * Another Postgres installation's bin directory (for example Debian's
   * /usr/lib/postgresql/15/bin) instead of the embedded one, with JIT left at
   * that server's default (on for Debian's; see postgres.ts).
   */
  pgBin: string | null;
  /** CPU-profile the broker and jobwire's worker and producer processes (--cpu-prof); collect pg_stat_statements and auto_explain plans. */
  profile: boolean;
  /** Where the JSON (and profiles) go. */
  out: string;
  /** Keep the Postgres data directory afterwards. */
  keep: boolean;
  progress: boolean;
}

export class UsageError extends Error {
  override name = "UsageError";
}

export const USAGE = `usage: npm run bench -- [flags]

  --scenario LIST     comma-separated: ${SCENARIOS.join(", ")} (default: all)
  --systems LIST      comma-separated: ${SYSTEMS.join(", ")} (default: all; peers run burn-down and latency only;
                      bullmq is skipped with a note where redis-server cannot be started)
  --jobs N            burn-down and history jobs (default ${DEFAULT_JOBS})
  --workers N         worker processes per system (default ${DEFAULT_WORKERS})
  --concurrency N     handlers at once per worker process (default ${DEFAULT_CONCURRENCY})
  --producers N       producer processes for steady state (default ${DEFAULT_PRODUCERS}; ${STEADY_CONCURRENCY} calls in flight in all)
  --seconds N         steady-state and latency duration (default ${DEFAULT_STEADY_SECONDS})
  --bulk-jobs N       jobs for bulk enqueue (default ${DEFAULT_BULK_JOBS})
  --history-rows N    completed jobs in the table for the history scenario (default ${DEFAULT_HISTORY_ROWS})
  --budget-jobs N     jobs for worker-budget (default ${DEFAULT_BUDGET_JOBS})
  --quick             small sizes for CI: ${QUICK.jobs} jobs, ${QUICK.steadySeconds} s windows, ${QUICK.historyRows} history rows,
                      ${QUICK.budgetJobs} worker-budget jobs
  --keep-history      jobwire keeps completed jobs (its default, 24 h retention) instead of deleting
                      them at ack like graphile-worker (the bench's queues get completed_retention 0)
  --durable           run Postgres with fsync and synchronous_commit on, and Redis with an fsync per write
                      (appendonly, appendfsync always); default off, for every system alike
  --pg-bin DIR        run on the Postgres in DIR (e.g. /usr/lib/postgresql/15/bin, Debian's) instead of the
                      embedded one, with JIT at that server's default (on for Debian's)
  --profile           --cpu-prof the broker and jobwire's workers and producers (into <out>/profiles/),
                      and collect pg_stat_statements (into the JSON) and auto_explain plans
  --out DIR           where JSON results go (default <repo>/bench-results)
  --keep              keep the Postgres data directory
  --no-progress       no progress bar even on a TTY
`;

function int(name: string, raw: string | undefined, min: number, max: number): number {
  const n = Number(raw);
  if (raw === undefined || !Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw ?? "")}`);
  }
  return n;
}

function list<T extends string>(name: string, raw: string | undefined, allowed: readonly T[]): T[] {
  const items = (raw ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new UsageError(`--${name} needs a value: ${allowed.join(", ")}`);
  for (const i of items) {
    if (!(allowed as readonly string[]).includes(i)) throw new UsageError(`--${name}: unknown "${i}"; known: ${allowed.join(", ")}`);
  }
  return [...new Set(items)] as T[];
}

export function parseOptions(argv: readonly string[], defaultOut: string): Options | "help" {
  const flags = new Map<string, string | undefined>();
  const booleans = new Set(["quick", "keep-history", "durable", "profile", "keep", "no-progress", "help"]);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h") return "help";
    if (!arg.startsWith("--")) throw new UsageError(`unexpected argument "${arg}"`);
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    if (booleans.has(name)) {
      flags.set(name, "true");
      continue;
    }
    flags.set(name, eq === -1 ? argv[++i] : arg.slice(eq + 1));
  }
  if (flags.has("help")) return "help";
  const known = new Set([
    ...booleans,
    "scenario",
    "systems",
    "jobs",
    "workers",
    "concurrency",
    "producers",
    "seconds",
    "bulk-jobs",
    "history-rows",
    "budget-jobs",
    "pg-bin",
    "out",
  ]);
  for (const k of flags.keys()) if (!known.has(k)) throw new UsageError(`unknown flag --${k}`);

  const quick = flags.has("quick");
  const seconds = flags.has("seconds") ? int("seconds", flags.get("seconds"), 1, 600) : undefined;
  const o: Options = {
    scenarios: flags.has("scenario") ? list("scenario", flags.get("scenario"), SCENARIOS) : [...SCENARIOS],
    systems: flags.has("systems") ? list("systems", flags.get("systems"), SYSTEMS) : [...SYSTEMS],
    quick,
    jobs: flags.has("jobs") ? int("jobs", flags.get("jobs"), 1, 10_000_000) : quick ? QUICK.jobs : DEFAULT_JOBS,
    workers: flags.has("workers") ? int("workers", flags.get("workers"), 1, 64) : DEFAULT_WORKERS,
    concurrency: flags.has("concurrency") ? int("concurrency", flags.get("concurrency"), 1, 1000) : DEFAULT_CONCURRENCY,
    producers: flags.has("producers") ? int("producers", flags.get("producers"), 1, STEADY_CONCURRENCY) : DEFAULT_PRODUCERS,
    steadySeconds: seconds ?? (quick ? QUICK.steadySeconds : DEFAULT_STEADY_SECONDS),
    latencySeconds: seconds ?? (quick ? QUICK.latencySeconds : DEFAULT_LATENCY_SECONDS),
    bulkJobs: flags.has("bulk-jobs") ? int("bulk-jobs", flags.get("bulk-jobs"), 1, 10_000_000) : quick ? QUICK.bulkJobs : DEFAULT_BULK_JOBS,
    historyRows: flags.has("history-rows")
      ? int("history-rows", flags.get("history-rows"), 0, 50_000_000)
      : quick
        ? QUICK.historyRows
        : DEFAULT_HISTORY_ROWS,
    budgetJobs: flags.has("budget-jobs")
      ? int("budget-jobs", flags.get("budget-jobs"), 1_000, 50_000_000)
      : quick
        ? QUICK.budgetJobs
        : DEFAULT_BUDGET_JOBS,
    keepHistory: flags.has("keep-history"),
    durable: flags.has("durable"),
    pgBin: flags.get("pg-bin") ?? null,
    profile: flags.has("profile"),
    out: flags.get("out") ?? defaultOut,
    keep: flags.has("keep"),
    progress: !flags.has("no-progress") && process.stderr.isTTY === true,
  };
  if (!o.systems.includes("jobwire")) throw new UsageError("--systems must include jobwire: every ratio is jobwire's");
  return o;
}
