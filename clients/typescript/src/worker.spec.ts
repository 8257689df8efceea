import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { JobCancelledError, LeaseLostError, PermanentError } from "./errors.js";
import { silentLogger } from "./logger.js";
import { type FakeBroker, fakeBroker, until } from "./testing/fake-broker.js";
import type { Outcome } from "./tracing.js";
import { type Handler, Worker, type WorkerOptions } from "./worker.js";

function newWorker(fb: FakeBroker, handlers: Record<string, Handler>, opts: Partial<WorkerOptions> = {}): Worker {
  return new Worker({
    client: fb.client,
    queues: ["q"],
    handlers,
    handleSignals: false,
    logger: silentLogger,
    reconnectBackoff: { initialMs: 10, maxMs: 50 },
    ...opts,
  });
}

/** A promise with its resolve function, for handlers a test releases. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => {
    open = r;
  });
  return { promise, open };
}

/** A worker whose "t" handlers all wait on one gate; started() counts those that began. */
function gatedWorker(fb: FakeBroker, concurrency: number): { w: Worker; release: ReturnType<typeof gate>; started: () => number } {
  const release = gate();
  let started = 0;
  const w = newWorker(
    fb,
    {
      t: async () => {
        started++;
        await release.promise;
      },
    },
    { concurrency },
  );
  return { w, release, started: () => started };
}

describe("Worker (fake broker)", () => {
  it("opens with max_in_flight = concurrency and never runs more than that", async () => {
    const fb = fakeBroker();
    let running = 0;
    let peak = 0;
    const release = gate();
    const w = newWorker(
      fb,
      {
        t: async () => {
          running++;
          peak = Math.max(peak, running);
          await release.promise;
          running--;
        },
      },
      { concurrency: 3 },
    );
    const done = w.run();
    for (let i = 0; i < 10; i++) fb.add();
    await until(() => running === 3, 2000, "three handlers running");
    expect(fb.opens[0]?.maxInFlight).toBe(3);
    expect(fb.maxOutstanding).toBe(3);
    release.open();
    await until(() => fb.acks.flat().length === 10, 2000, "ten acks");
    expect(peak).toBe(3);
    // Credit only ever came back for freed slots.
    expect(fb.credits.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(10);
    await w.stop();
    await done;
  });

  it("returns credit in batches while the broker still holds half of it, at once when it holds less", async () => {
    const fb = fakeBroker();
    let handled = 0;
    let running = 0;
    let peak = 0;
    const w = newWorker(
      fb,
      {
        t: async () => {
          peak = Math.max(peak, ++running);
          await new Promise((r) => setImmediate(r));
          running--;
          handled++;
        },
      },
      { concurrency: 10 },
    );
    const done = w.run();
    // One job at a time: the broker's credit drains by one per job.
    for (let i = 1; i <= 20; i++) {
      fb.add();
      await until(() => handled === i, 2000, `job ${i} handled`);
    }
    // Credit goes back when the broker would hold less than 5: every 5 or 6 jobs, not every job.
    expect(fb.credits.length).toBeGreaterThanOrEqual(3);
    expect(fb.credits.length).toBeLessThanOrEqual(4);
    expect(Math.min(...fb.credits)).toBeGreaterThanOrEqual(5);
    // Under load (more jobs than slots) every slot is refilled as it frees up.
    for (let i = 0; i < 50; i++) fb.add();
    await until(() => handled === 70, 2000, "fifty more handled");
    expect(peak).toBe(10);
    expect(fb.credits.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(70);
    await w.stop();
    await done;
  });

  it("does not warn of a lost lease when a heartbeat crosses the job's own ack", async () => {
    const fb = fakeBroker();
    const warnings: string[] = [];
    const logger = { ...silentLogger, warn: (m: string) => void warnings.push(m) };
    // Acks keep failing, so the finished job stays held while heartbeats run;
    // the broker then reports its lease gone, as it does once an ack lands.
    fb.failAcks(1_000_000);
    const w = newWorker(fb, { t: async () => {} }, { logger, ackFlushMs: 1 });
    const done = w.run();
    const token = fb.add({ leaseMs: 300 });
    await until(() => fb.heartbeats.some((b) => b.includes(token)), 3000, "a heartbeat for the finished job");
    fb.lost.add(token);
    const beats = fb.heartbeats.length;
    await until(() => fb.heartbeats.length > beats, 3000, "a heartbeat that reports the lease gone");
    expect(warnings.filter((m) => m.includes("lease lost"))).toEqual([]);
    fb.failAcks(0);
    await w.stop();
    await done;
  });

  it("splits heartbeats into calls of at most 1000 tokens", async () => {
    const fb = fakeBroker();
    const release = gate();
    const w = newWorker(fb, { t: () => release.promise }, { concurrency: 1200 });
    const done = w.run();
    const tokens = Array.from({ length: 1200 }, () => fb.add({ leaseMs: 600 }));
    await until(() => new Set(fb.heartbeats.flat()).size === tokens.length, 5000, "every lease heartbeated");
    expect(Math.max(...fb.heartbeats.map((b) => b.length))).toBeLessThanOrEqual(1000);
    release.open();
    await w.stop();
    await done;
  });

  it("keeps several Ack calls in flight when handlers outpace them", async () => {
    const fb = fakeBroker();
    const release = fb.holdAcks();
    const w = newWorker(fb, { t: async () => {} }, { concurrency: 100, ackMaxBatch: 10, ackFlushMs: 1 });
    const done = w.run();
    for (let i = 0; i < 100; i++) fb.add();
    await until(() => fb.maxAcksInFlight >= 4, 3000, "four Ack calls in flight");
    release();
    await until(() => fb.acks.flat().length === 100, 3000, "every job acked");
    expect(fb.maxAcksInFlight).toBe(4);
    expect(new Set(fb.acks.flat()).size).toBe(100);
    await w.stop();
    await done;
  });

  it("takes no more jobs while the acks it owes are as many as its slots", async () => {
    // Credit followed free slots alone: a worker whose handlers outran its
    // acks kept taking jobs, and held ~90,000 of them in the bench.
    const fb = fakeBroker();
    const release = fb.holdAcks();
    const w = newWorker(fb, { t: async () => {} }, { concurrency: 10, ackMaxBatch: 5, ackFlushMs: 1 });
    const done = w.run();
    for (let i = 0; i < 200; i++) fb.add();
    await until(() => fb.maxAcksInFlight >= 4, 3000, "acks held at the broker");
    // Every job it took has run; it then holds back the credit for more.
    await until(() => w.holding >= 20 && w.running === 0, 3000, "the worker idle, holding twice its slots");
    const credit = fb.opens[0]!.maxInFlight + fb.credits.reduce((a, b) => a + b, 0);
    expect(credit).toBeLessThanOrEqual(2 * 10 + 10);
    expect(w.holding).toBeLessThanOrEqual(2 * 10 + 10);
    release();
    await until(() => fb.acks.flat().length === 200, 5000, "every job acked once the acks are answered");
    await w.stop();
    await done;
  });

  it("gives an already-aborted signal to a handler that reads it after the cancel arrived", async () => {
    const fb = fakeBroker();
    const started = gate();
    const cancelled = gate();
    let seen: { aborted: boolean; reason: unknown } | undefined;
    const w = newWorker(fb, {
      t: async (_job, ctx) => {
        started.open();
        await cancelled.promise; // the handler has not touched ctx.signal yet
        seen = { aborted: ctx.signal.aborted, reason: ctx.signal.reason };
        throw ctx.signal.reason;
      },
    });
    const done = w.run();
    const token = fb.add({ leaseMs: 300 });
    await started.promise;
    fb.cancelRequested.add(token);
    const beats = fb.heartbeats.length;
    await until(() => fb.heartbeats.length > beats, 3000, "the heartbeat that reports the cancel");
    cancelled.open();
    await until(() => fb.nacks.length === 1, 3000, "the nack");
    expect(seen?.aborted).toBe(true);
    expect(seen?.reason).toBeInstanceOf(JobCancelledError);
    await w.stop();
    await done;
  });

  it("does not heartbeat a finished job while its ack is on its way", async () => {
    const fb = fakeBroker();
    const release = fb.holdAcks();
    const running = gate();
    const w = newWorker(fb, { slow: () => running.promise, fast: async () => {} });
    const done = w.run();
    // The fast job finishes at once and its ack hangs; the slow one runs on.
    const fastToken = fb.add({ type: "fast", leaseMs: 3000 });
    const slowToken = fb.add({ type: "slow", leaseMs: 600 });
    await until(() => fb.heartbeats.some((b) => b.includes(slowToken)), 3000, "a heartbeat for the running job");
    const first = fb.heartbeats.find((b) => b.includes(slowToken))!;
    expect(first).not.toContain(fastToken);
    release();
    running.open();
    await until(() => fb.acks.flat().length === 2, 3000, "both acks");
    await w.stop();
    await done;
  });

  it("batches acks into few calls", async () => {
    const fb = fakeBroker();
    const w = newWorker(fb, { t: async () => {} }, { concurrency: 50, ackFlushMs: 20 });
    const done = w.run();
    for (let i = 0; i < 50; i++) fb.add();
    await until(() => fb.acks.flat().length === 50, 2000, "fifty acks");
    expect(fb.acks.length).toBeLessThan(10);
    await w.stop();
    await done;
  });

  it("heartbeats all held leases in one call before they expire", async () => {
    const fb = fakeBroker();
    const { w, release, started } = gatedWorker(fb, 3);
    const done = w.run();
    const tokens = [fb.add({ leaseMs: 300 }), fb.add({ leaseMs: 300 }), fb.add({ leaseMs: 300 })];
    await until(() => started() === 3, 2000, "three started");
    await until(() => fb.heartbeats.some((b) => b.length === 3), 1000, "a heartbeat carrying all three tokens");
    expect(fb.heartbeats.find((b) => b.length === 3)?.sort()).toEqual([...tokens].sort());
    release.open();
    await w.stop();
    await done;
    expect(fb.acks.flat().sort()).toEqual([...tokens].sort());
  });

  it("aborts the handler's signal when the broker reports cancel_requested, then nacks", async () => {
    const fb = fakeBroker();
    let reason: unknown;
    const w = newWorker(fb, {
      t: async (_job, ctx) => {
        await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
        reason = ctx.signal.reason;
        throw ctx.signal.reason;
      },
    });
    const done = w.run();
    const tok = fb.add({ leaseMs: 300 });
    await until(() => w.running === 1, 2000, "handler running");
    fb.cancelRequested.add(tok);
    await until(() => fb.nacks.length === 1, 2000, "the nack");
    expect(reason).toBeInstanceOf(JobCancelledError);
    expect(fb.nacks[0]?.permanent).toBe(false);
    await w.stop();
    await done;
  });

  it("aborts with LeaseLostError when a lease is lost and sends no ack", async () => {
    const fb = fakeBroker();
    let reason: unknown;
    const w = newWorker(fb, {
      t: async (_job, ctx) => {
        await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
        reason = ctx.signal.reason;
      },
    });
    const done = w.run();
    const tok = fb.add({ leaseMs: 300 });
    await until(() => w.running === 1, 2000, "handler running");
    fb.lost.add(tok);
    await until(() => reason !== undefined, 2000, "abort");
    expect(reason).toBeInstanceOf(LeaseLostError);
    await until(() => w.holding === 0, 2000, "lease dropped");
    expect(fb.acks.flat()).not.toContain(tok);
    await w.stop();
    await done;
  });

  it("names each attempt's outcome with the shared vocabulary (scenarios.md)", async () => {
    const fb = fakeBroker();
    const outcomes = new Map<string, Outcome>();
    const hold = gate();
    const w = newWorker(
      fb,
      {
        ok: () => {},
        fail: () => {
          throw new Error("transient");
        },
        perm: () => {
          throw new PermanentError("permanent");
        },
        held: () => hold.promise,
        broken: () => {
          throw new Error("its nack cannot be delivered");
        },
      },
      {
        concurrency: 8,
        onEvent: (e) => {
          if (e.type === "job_finished") outcomes.set(e.jobId, e.outcome);
        },
      },
    );
    const done = w.run();
    const ids = (tokens: string[]) => tokens.map((t) => t.replace("tok-", ""));
    const [completed, retry, dead, cancelled, leaseLost] = ids([
      fb.add({ type: "ok" }),
      fb.add({ type: "fail" }),
      fb.add({ type: "perm" }),
      fb.add({ type: "fail" }),
      fb.add({ type: "held", leaseMs: 300 }),
    ]);
    fb.cancelRequested.add(`tok-${cancelled}`);
    await until(() => outcomes.size === 4, 2000, "four outcomes");
    // The lease of a running job is lost; the handler returns afterwards.
    fb.lost.add(`tok-${leaseLost}`);
    await until(() => fb.heartbeats.flat().includes(`tok-${leaseLost}`), 2000, "the heartbeat that finds the lease lost");
    hold.open();
    await until(() => outcomes.size === 5, 2000, "the lost lease's outcome");
    fb.failNacks(Code.Internal);
    const [reportFailed] = ids([fb.add({ type: "broken" })]);
    await until(() => outcomes.size === 6, 2000, "the undeliverable nack's outcome");
    expect(Object.fromEntries(outcomes)).toEqual({
      [completed!]: "completed",
      [retry!]: "retry",
      [dead!]: "dead",
      [cancelled!]: "cancelled",
      [leaseLost!]: "lease_lost",
      [reportFailed!]: "report_failed",
    });
    await w.stop();
    await done;
  });

  it("nacks PermanentError as permanent and ordinary errors as transient", async () => {
    const fb = fakeBroker();
    const w = newWorker(fb, {
      perm: () => {
        throw new PermanentError("bad input");
      },
      trans: () => {
        throw new Error("try later");
      },
    });
    const done = w.run();
    const a = fb.add({ type: "perm" });
    const b = fb.add({ type: "trans" });
    await until(() => fb.nacks.length === 2, 2000, "two nacks");
    const byToken = new Map(fb.nacks.map((n) => [n.leaseToken, n]));
    expect(byToken.get(a)).toMatchObject({ permanent: true, error: "bad input" });
    expect(byToken.get(b)).toMatchObject({ permanent: false, error: "try later" });
    await w.stop();
    await done;
  });

  it("fails a job with no handler permanently, naming the type", async () => {
    const fb = fakeBroker();
    const w = newWorker(fb, { known: () => {} });
    const done = w.run();
    fb.add({ type: "mystery" });
    await until(() => fb.nacks.length === 1, 2000, "the nack");
    expect(fb.nacks[0]?.permanent).toBe(true);
    expect(fb.nacks[0]?.error).toContain('no handler for job type "mystery"');
    await w.stop();
    await done;
  });

  it("gives the handler the decoded payload and the job's details", async () => {
    const fb = fakeBroker();
    let seen: unknown;
    const w = newWorker(fb, {
      greet: (job, ctx) => {
        seen = { payload: job.payload, id: ctx.id, attempt: ctx.attempt, queue: ctx.queue, type: job.type };
      },
    });
    const done = w.run();
    fb.add({ type: "greet", payload: { name: "ada" }, attempt: 2, queue: "q" });
    await until(() => fb.acks.length === 1, 2000, "ack");
    expect(seen).toEqual({ payload: { name: "ada" }, id: "1", attempt: 2, queue: "q", type: "greet" });
    await w.stop();
    await done;
  });

  it("reconnects after the stream fails and still acks the job in flight", async () => {
    const fb = fakeBroker();
    const release = gate();
    let connects = 0;
    const w = newWorker(
      fb,
      {
        t: async () => {
          await release.promise;
        },
      },
      { concurrency: 2, onEvent: (e) => (e.type === "connected" ? connects++ : undefined) },
    );
    const done = w.run();
    const tok = fb.add();
    await until(() => w.running === 1, 2000, "handler running");
    fb.failStreams(Code.Unavailable);
    await until(() => fb.opens.length === 2, 2000, "a second Lease stream");
    fb.failAcks(2);
    release.open();
    await until(() => fb.settled(tok), 3000, "the ack after reconnecting");
    // The second stream still respects concurrency: one slot was busy.
    const tok2 = fb.add();
    const tok3 = fb.add();
    await until(() => fb.settled(tok2) && fb.settled(tok3), 3000, "later jobs");
    expect(fb.maxOutstanding).toBeLessThanOrEqual(3);
    await w.stop();
    await done;
    expect(connects).toBeGreaterThanOrEqual(1);
  });

  it("stop() half-closes the stream, lets jobs finish, flushes acks, then resolves run()", async () => {
    const fb = fakeBroker();
    const { w, release, started } = gatedWorker(fb, 2);
    const done = w.run();
    const t1 = fb.add();
    const t2 = fb.add();
    await until(() => started() === 2, 2000, "both started");
    const stopped = w.stop();
    await until(() => fb.openStreams === 0, 2000, "the broker ended the stream");
    fb.add(); // arrives after the stop: must not be delivered
    let resolved = false;
    void stopped.then(() => (resolved = true));
    await new Promise((r) => setImmediate(r));
    expect(resolved).toBe(false);
    release.open();
    await done;
    expect(fb.acks.flat().sort()).toEqual([t1, t2].sort());
    expect(started()).toBe(2);
  });

  it("aborts handlers that outlive the shutdown timeout and nacks them for a prompt retry", async () => {
    const fb = fakeBroker();
    const w = newWorker(
      fb,
      {
        t: async (_job, ctx) => {
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
          throw ctx.signal.reason;
        },
      },
      { shutdownTimeoutMs: 100 },
    );
    const done = w.run();
    fb.add();
    await until(() => w.running === 1, 2000, "handler running");
    await w.stop();
    await done;
    expect(fb.nacks).toHaveLength(1);
    expect(fb.nacks[0]?.permanent).toBe(false);
    expect(fb.nacks[0]?.retryAfter).toBeDefined();
  });

  it("rejects run() when the broker refuses the configuration", async () => {
    const fb = fakeBroker();
    fb.failStreams(Code.InvalidArgument);
    const w = newWorker(fb, { t: () => {} });
    await expect(w.run()).rejects.toMatchObject({ code: Code.InvalidArgument });
  });

  it("validates its options", () => {
    const fb = fakeBroker();
    expect(() => new Worker({ client: fb.client, queues: [], handlers: { t: () => {} } })).toThrow(/queues/);
    expect(() => new Worker({ client: fb.client, queues: ["q"], handlers: {} })).toThrow(/handlers/);
    expect(() => new Worker({ client: fb.client, queues: ["q"], concurrency: 0, handlers: { t: () => {} } })).toThrow(
      /concurrency/,
    );
  });
});
