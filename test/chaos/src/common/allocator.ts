/**
 * Which malloc the fuzzer's broker runs on.
 *
 * Node's native memory (nghttp2 sessions, parsers, V8's compiler zones) comes
 * from malloc. glibc's malloc keeps what a burst freed: after `npm run fuzz
 * -- --short` the broker's V8 heap and external memory were back at their
 * baseline (heapUsed 15.3 -> 17.3 MB) while its RSS stayed 40-48% above it
 * (69 -> 102 MB; the [heap] mapping 8 -> 22 MB and four thread arenas 11 MB
 * more), and glibc's tunables (arena_max=2, fixed trim and mmap thresholds)
 * only brought that to 25%. jemalloc returns freed pages on a timer: the
 * same run ended 10% above its baseline. The Docker image runs the broker on
 * jemalloc (Dockerfile, LD_PRELOAD), and the fuzzer measures the broker as
 * the image runs it when the library is installed (Debian: libjemalloc2).
 */
import { existsSync } from "node:fs";

export type Allocator = "jemalloc" | "glibc";

/** Where Debian and the Docker image put libjemalloc.so.2. */
const JEMALLOC_PATHS = [
  "/usr/local/lib/libjemalloc.so.2",
  `/usr/lib/${process.arch === "arm64" ? "aarch64" : "x86_64"}-linux-gnu/libjemalloc.so.2`,
  "/usr/lib/libjemalloc.so.2",
  "/usr/lib64/libjemalloc.so.2",
];

export function findJemalloc(): string | null {
  return JEMALLOC_PATHS.find((p) => existsSync(p)) ?? null;
}

/**
 * The environment that puts the broker on `wanted` (null: jemalloc where
 * installed, else glibc), and a line that says which it is.
 */
export function allocatorEnv(wanted: Allocator | null): { allocator: Allocator; env: Record<string, string>; note: string } {
  const lib = findJemalloc();
  if (wanted === "jemalloc" && lib === null) {
    throw new Error(`--allocator jemalloc: libjemalloc.so.2 is not in ${JEMALLOC_PATHS.join(", ")} (Debian: apt-get install libjemalloc2)`);
  }
  if (wanted === "glibc" || lib === null) {
    return {
      allocator: "glibc",
      env: {},
      note: wanted === "glibc" ? "glibc malloc (--allocator glibc)" : "glibc malloc (libjemalloc2 is not installed; the Docker image runs on jemalloc)",
    };
  }
  return { allocator: "jemalloc", env: { LD_PRELOAD: lib }, note: `jemalloc (LD_PRELOAD=${lib}, as the Docker image runs the broker)` };
}
