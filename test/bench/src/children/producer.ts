/**
 * A producer process for any system (see senders.ts), in one of three modes:
 *
 *   closed-loop  `concurrency` single-job calls always in flight, for `seconds`
 *   paced        single-job calls started at `rate` per second for `seconds`,
 *                each without waiting for the ones before (an open loop, so a
 *                slow call delays no later arrival)
 *   bulk         `total` jobs in calls of `batch`, `concurrency` in flight
 */
import { type ProducerResult, type ProducerSpec, now } from "../protocol.js";
import { openSender } from "../senders.js";
import { Samples, errorText, runChild } from "./runtime.js";

/** Paced mode wakes this often and starts every call that has come due. */
const PACE_TICK_MS = 1;

runChild<ProducerSpec>(async (spec) => {
  const sender = await openSender(spec.system, spec.endpoint, spec.queue);
  const callMs = new Samples();
  const errors: string[] = [];
  let sent = 0;
  let started = 0;
  let elapsedMs = 0;
  const capacity = spec.mode === "paced" ? Math.ceil(spec.rate * spec.seconds) : 0;
  const sentAt = new Float64Array(capacity);
  const returnedAt = new Float64Array(capacity);
  let stopRequested = false;

  const timed = async (fn: () => Promise<void>): Promise<boolean> => {
    const t0 = performance.now();
    try {
      await fn();
      callMs.add(performance.now() - t0);
      return true;
    } catch (err) {
      errors.push(errorText(err));
      return false;
    }
  };

  const closedLoop = async (t0: number) => {
    const end = t0 + spec.seconds * 1000;
    const lane = async () => {
      while (!stopRequested && performance.now() < end && errors.length === 0) {
        const i = spec.firstIndex + started++;
        if (await timed(() => sender.one(i))) sent++;
      }
    };
    await Promise.all(Array.from({ length: spec.concurrency }, lane));
  };

  const paced = async (t0: number) => {
    const calls: Promise<void>[] = [];
    while (started < capacity && errors.length === 0) {
      const due = Math.min(capacity, Math.floor(((performance.now() - t0) / 1000) * spec.rate) + 1);
      while (started < due) {
        const k = started++;
        sentAt[k] = now();
        calls.push(
          timed(() => sender.one(spec.firstIndex + k)).then((ok) => {
            returnedAt[k] = now();
            if (ok) sent++;
          }),
        );
      }
      await new Promise((r) => setTimeout(r, PACE_TICK_MS));
    }
    await Promise.all(calls);
  };

  const bulk = async () => {
    const lane = async () => {
      while (started < spec.total && errors.length === 0) {
        const first = started;
        const n = Math.min(spec.batch, spec.total - first);
        started += n;
        if (await timed(() => sender.many(spec.firstIndex + first, n))) sent += n;
      }
    };
    await Promise.all(Array.from({ length: spec.concurrency }, lane));
  };

  return {
    progress: () => sent,
    go: async () => {
      const t0 = performance.now();
      if (spec.mode === "closed-loop") await closedLoop(t0);
      else if (spec.mode === "paced") await paced(t0);
      else await bulk();
      elapsedMs = performance.now() - t0;
    },
    stop: async (): Promise<ProducerResult> => {
      stopRequested = true;
      await sender.close();
      return { sent, callMs: callMs.values(), sentAt, returnedAt, elapsedMs, errors };
    },
  };
});
