/** Command-line flags of `npm run chaos`. */
export interface ChaosOptions {
  short: boolean;
  /** Fault ids to run (all when empty). */
  only: string[];
  seed: number;
  /** How long the queue may take to drain after the load, everything healthy. */
  drainMs: number;
  /** How long one logical job is retried by its producer before it counts as indeterminate. */
  jobDeadlineMs: number;
  keep: boolean;
  verbose: boolean;
  /** The broker build to run (default server/dist/main.js). */
  broker: string | null;
}

export const USAGE = `usage: npm run chaos -- [--short] [--only worker-kill,broker-kill,postgres-restart,poison-row] [--seed N] [--keep] [--verbose] [--broker PATH]

  --short     every fault, shortened: about 1-2 minutes in all (CI)
  --only      run only these faults (comma-separated ids)
  --seed      seed for the choice of victims (default 1)
  --keep      keep the run directory (broker, worker and Postgres logs)
  --verbose   a line per fault event as it happens
  --broker    the broker to run (default server/dist/main.js)`;

export function parseChaosOptions(argv: string[]): ChaosOptions {
  const o: ChaosOptions = { short: false, only: [], seed: 1, drainMs: 60_000, jobDeadlineMs: 60_000, keep: false, verbose: false, broker: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--short") o.short = true;
    else if (a === "--only") o.only = value().split(",").filter(Boolean);
    else if (a === "--seed") o.seed = Number(value());
    else if (a === "--keep") o.keep = true;
    else if (a === "--verbose") o.verbose = true;
    else if (a === "--broker") o.broker = value();
    else if (a === "--help" || a === "-h") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else throw new Error(`unknown flag ${a}\n${USAGE}`);
  }
  if (!Number.isInteger(o.seed)) throw new Error("--seed takes an integer");
  if (o.short) {
    o.drainMs = 15_000;
    o.jobDeadlineMs = 30_000;
  }
  return o;
}
