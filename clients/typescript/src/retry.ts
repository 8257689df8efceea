import { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay, sleep } from "./backoff.js";
import { DeadlineExceededError, JobwireError, asUnavailable, isTransient, toJobwireError } from "./errors.js";
import { Code } from "@connectrpc/connect";

/** Per-call deadline when none is given. */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Tries per call, the first included, for UNAVAILABLE answers. */
export const DEFAULT_MAX_ATTEMPTS = 5;

export interface RetryOptions extends Partial<BackoffOptions> {
  /** Tries per call including the first; 1 disables retries. */
  maxAttempts?: number;
}

export interface CallOptions {
  /**
   * Deadline for the whole call, retries included, in ms. Each try is sent
   * with the time that is left, so the broker sees the real deadline.
   */
  timeoutMs?: number;
  /** Aborts the call (and its retries). */
  signal?: AbortSignal;
}

/**
 * Runs `fn` and retries it while it fails with UNAVAILABLE (a broken
 * connection counts, see asUnavailable), with jittered backoff, until
 * maxAttempts or the deadline. Every error comes out as a JobwireError.
 */
export async function withRetry<T>(
  fn: (opts: { timeoutMs: number; signal?: AbortSignal }) => Promise<T>,
  call: CallOptions,
  retry: RetryOptions,
): Promise<T> {
  const timeoutMs = call.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const maxAttempts = Math.max(1, retry.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
  const backoff: BackoffOptions = { ...DEFAULT_BACKOFF, ...stripUndefined(retry) };
  for (let attempt = 1; ; attempt++) {
    const left = deadline - Date.now();
    if (left <= 0) throw new DeadlineExceededError(Code.DeadlineExceeded, `deadline of ${timeoutMs}ms exceeded`);
    try {
      const opts: { timeoutMs: number; signal?: AbortSignal } = { timeoutMs: left };
      if (call.signal !== undefined) opts.signal = call.signal;
      return await fn(opts);
    } catch (err) {
      const e = err instanceof JobwireError ? err : toJobwireError(asUnavailable(err, call.signal));
      if (!isTransient(e) || attempt >= maxAttempts || call.signal?.aborted) throw e;
      const delay = backoffDelay(attempt, backoff);
      if (Date.now() + delay >= deadline) throw e;
      await sleep(delay, call.signal);
      if (call.signal?.aborted) throw e;
    }
  }
}

function stripUndefined(o: RetryOptions): Partial<BackoffOptions> {
  const out: Partial<BackoffOptions> = {};
  if (o.initialMs !== undefined) out.initialMs = o.initialMs;
  if (o.maxMs !== undefined) out.maxMs = o.maxMs;
  if (o.multiplier !== undefined) out.multiplier = o.multiplier;
  return out;
}

export { JobwireError };
