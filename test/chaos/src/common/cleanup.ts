/**
 * Last-resort cleanup: on SIGINT or SIGTERM, or an unexpected crash of the
 * harness, stop every process the run started (brokers, workers, Postgres)
 * so that none outlives it.
 */
const tasks = new Set<() => Promise<void> | void>();
const CLEANUP_TIMEOUT_MS = 20_000;

export function onCleanup(fn: () => Promise<void> | void): () => void {
  tasks.add(fn);
  return () => tasks.delete(fn);
}

export async function runCleanup(): Promise<void> {
  const all = [...tasks].reverse();
  tasks.clear();
  const timeout = new Promise<void>((r) => setTimeout(r, CLEANUP_TIMEOUT_MS).unref());
  await Promise.race([Promise.all(all.map((f) => Promise.resolve().then(f).catch(() => {}))), timeout]);
}

export function installSignalCleanup(): void {
  const bail = (why: string, code: number) => {
    process.stderr.write(`\n${why}: stopping every process this run started\n`);
    void runCleanup().finally(() => process.exit(code));
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.once(sig, () => bail(sig, 130));
  // stdout piped into `head` that has exited: nobody reads the report any more.
  process.stdout.on("error", () => bail("stdout closed", 1));
}
