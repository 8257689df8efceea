/**
 * The graceful drain, after the Lease stream has ended: let in-flight jobs
 * finish for up to shutdownTimeoutMs (counted from stop()), abort the rest
 * with WorkerShutdownError, hand jobs that never started straight back,
 * flush the acks and nacks owed, and let every attempt end its span.
 */
import { settleWithin } from "./backoff.js";
import { WorkerShutdownError } from "./errors.js";
import { abortHeld } from "./worker-state.js";
import type { WorkerCore } from "./worker-state.js";

/** Extra time to flush acks and nacks after in-flight jobs end or time out. */
export const FLUSH_TIMEOUT_MS = 5_000;

export async function drain(core: WorkerCore): Promise<void> {
  const { s, exec, settler, held, forceController } = core;
  const deadline = core.stopRequestedAt + s.shutdownTimeoutMs;
  const timeout = setTimeout(() => forceController.abort(), Math.max(0, deadline - Date.now()));
  const forced = once(forceController.signal);
  try {
    while (exec.handlerDone.size > 0 || exec.waiting.length > 0) {
      if (forceController.signal.aborted) break;
      await Promise.race([Promise.allSettled([...exec.handlerDone.values()]), forced]);
    }
  } finally {
    clearTimeout(timeout);
  }
  if (exec.handlerDone.size > 0 || exec.waiting.length > 0) {
    s.log.warn(`shutdown timeout: aborting ${exec.handlerDone.size} running job(s), returning ${exec.waiting.length} waiting job(s)`);
    // Jobs never started go back at once, without running.
    for (const h of exec.waiting.splice(0)) {
      void settler
        .nack({ token: h.token, error: "worker stopped before starting the job", permanent: false, retryAfterMs: 0 })
        .finally(() => held.delete(h.token));
    }
    const reason = new WorkerShutdownError(`worker ${s.workerId} is shutting down`);
    for (const h of held.values()) if (h.started) abortHeld(h, reason);
    await settleWithin(Promise.allSettled([...exec.handlerDone.values()]), FLUSH_TIMEOUT_MS);
    if (exec.handlerDone.size > 0) {
      s.log.error(`${exec.handlerDone.size} handler(s) ignored their abort signal; their leases will expire`);
    }
  }
  const abandoned = await settler.flush(Date.now() + FLUSH_TIMEOUT_MS);
  if (abandoned > 0) s.log.error(`${abandoned} ack(s)/nack(s) could not be delivered; those jobs will run again`);
  // Let every attempt end its span before run() resolves, so an exporter
  // flushed right after sees them.
  await settleWithin(Promise.allSettled([...exec.reporting.values()]), 1000);
}

function once(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}
