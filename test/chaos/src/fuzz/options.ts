/** Command-line flags of `npm run fuzz`. */
import type { Allocator } from "../common/allocator.js";

export interface FuzzOptions {
  short: boolean;
  seed: number;
  /** Stop after this many cases… */
  cases: number;
  /** …or after this long, whichever comes first. */
  durationMs: number;
  lanes: number;
  /** Case indices to send alone, with the request and answer printed in full. */
  replay: number[];
  /** Only these input families (default: all). */
  families: string[];
  broker: string | null;
  keep: boolean;
  /**
   * Report the RSS target without failing the run on it: always, or only
   * when the broker runs on glibc's malloc (npm test; see report.ts, passed()).
   */
  rssInformational: "never" | "always" | "on-glibc";
  /** The broker's malloc (null: jemalloc where installed; see common/allocator.ts). */
  allocator: Allocator | null;
  halfOpen: number;
  halfOpenHoldMs: number;
  drainMs: number;
  settleMs: number;
}

export const DEFAULT_SEED = 20260501;

export const USAGE = `usage: npm run fuzz -- [--short] [--seed N] [--cases N] [--duration S] [--lanes N] [--replay I[,J…]] [--family F[,G…]] [--broker PATH] [--keep] [--rss-informational | --rss-informational-on-glibc] [--allocator jemalloc|glibc]

  --short      about a minute in all (CI): 3,000 cases within 30 s
  --seed       the run's seed (default ${DEFAULT_SEED}); printed, so any run can be repeated
  --cases      stop after this many cases (default 20,000; short 3,000)
  --duration   or after this many seconds of sending (default 240; short 30)
  --lanes      cases in flight at once (default 8)
  --replay     send only these cases, alone, and print each request and answer in full
  --family     draw inputs only from these families: valid, poke, random message, mutated,
               random bytes, envelope, headers, half-sent (quote names with spaces)
  --broker     the broker to run (default server/dist/main.js)
  --keep       keep the run directory (broker and Postgres logs)
  --rss-informational  report the RSS target but do not fail on it (see report.ts)
  --rss-informational-on-glibc  the same, only when the broker runs on glibc's malloc (npm test)
  --allocator  the broker's malloc: jemalloc (the default where libjemalloc2 is installed,
               as the Docker image runs it) or glibc`;

export function parseFuzzOptions(argv: string[]): FuzzOptions {
  const o: FuzzOptions = {
    short: false,
    seed: DEFAULT_SEED,
    cases: 20_000,
    durationMs: 240_000,
    lanes: 8,
    replay: [],
    families: [],
    broker: null,
    keep: false,
    rssInformational: "never",
    allocator: null,
    halfOpen: 2_000,
    halfOpenHoldMs: 15_000,
    drainMs: 30_000,
    settleMs: 60_000,
  };
  let cases: number | null = null;
  let duration: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const int = () => {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 0) throw new Error(`${a} takes a whole number`);
      return n;
    };
    if (a === "--short") o.short = true;
    else if (a === "--seed") o.seed = int();
    else if (a === "--cases") cases = int();
    else if (a === "--duration") duration = int() * 1000;
    else if (a === "--lanes") o.lanes = Math.max(1, int());
    else if (a === "--replay") o.replay = value().split(",").map((s) => Number(s));
    else if (a === "--broker") o.broker = value();
    else if (a === "--family") o.families = value().split(",").filter(Boolean);
    else if (a === "--keep") o.keep = true;
    else if (a === "--rss-informational") o.rssInformational = "always";
    else if (a === "--rss-informational-on-glibc") o.rssInformational = "on-glibc";
    else if (a === "--allocator") {
      const v = value();
      if (v !== "jemalloc" && v !== "glibc") throw new Error("--allocator takes jemalloc or glibc");
      o.allocator = v;
    }
    else if (a === "--help" || a === "-h") {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else throw new Error(`unknown flag ${a}\n${USAGE}`);
  }
  if (o.replay.some((n) => !Number.isInteger(n) || n < 0)) throw new Error("--replay takes case numbers, e.g. --replay 12,345");
  if (o.short) {
    o.cases = 3_000;
    o.durationMs = 30_000;
    o.halfOpen = 500;
    o.halfOpenHoldMs = 5_000;
    o.drainMs = 10_000;
    o.settleMs = 15_000;
  }
  if (cases !== null) o.cases = cases;
  if (duration !== null) o.durationMs = duration;
  return o;
}
