/**
 * Jittered exponential backoff, used for RPC retries and for reconnecting
 * the Lease stream. "Full jitter" (a uniform draw in [0, cap]) spreads a
 * fleet of workers that lost the broker at the same instant, so they do not
 * all reconnect in the same millisecond when it comes back.
 */
export interface BackoffOptions {
  /** First delay's upper bound, in ms. */
  initialMs: number;
  /** Largest delay, in ms. */
  maxMs: number;
  /** Growth per attempt; at least 1. */
  multiplier: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({
  initialMs: 100,
  maxMs: 5_000,
  multiplier: 2,
});

/**
 * The delay before retry number `attempt` (1-based): a uniform draw from
 * [cap/2, cap] where cap = min(maxMs, initialMs * multiplier^(attempt-1)).
 * Keeping the lower half avoids hot loops of near-zero delays.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  const exp = Math.max(0, attempt - 1);
  const cap = Math.min(opts.maxMs, opts.initialMs * Math.max(1, opts.multiplier) ** exp);
  return Math.round(cap / 2 + (cap / 2) * random());
}

/**
 * Resolves after `ms`, or early (without rejecting) when `signal` aborts.
 * The timer is unref'd only when asked, so a waiting worker keeps the
 * process alive by default.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = (): void => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Waits for `p`, but at most `ms`; resolves true if `p` settled in time.
 * Clears its timer either way, so a finished wait never keeps the process
 * alive.
 */
export async function settleWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), Math.max(0, ms));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
