/**
 * Runs `fn` now and again `everyMs` after each run finishes (never two at
 * once, so a slow broker is not piled on), until the returned stop is called.
 */
export function poll(fn: () => Promise<void>, everyMs: number): { stop(): void; now(): Promise<void> } {
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> | null = null;
  const run = async () => {
    clearTimeout(timer);
    if (stopped) return;
    running ??= fn().finally(() => {
      running = null;
      if (!stopped) timer = setTimeout(run, everyMs);
    });
    return running;
  };
  void run();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    now: async () => {
      if (running) await running;
      await run();
    },
  };
}
