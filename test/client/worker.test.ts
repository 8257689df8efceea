/**
 * The TypeScript worker runtime and client against a real broker: flow
 * control, heartbeats, cancellation, crash recovery, graceful drain,
 * reconnects across a broker restart, and failure handling.
 */
import path from "node:path";
import {
  Code,
  FailedPreconditionError,
  JobwireClient,
  NotFoundError,
  type JobContext,
  type JobInfo,
  PermanentError,
  Worker,
  type WorkerJob,
  decodeJobPayload,
} from "@jobwire/client";
import { startTestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Child,
  type Env,
  FIXTURES,
  deferred,
  eventually,
  reap,
  setup,
  spawnNode,
  testLogger,
  uniqueQueue,
  waitForState,
  within,
  work,
} from "./helpers.js";

let env: Env;
beforeAll(async () => {
  env = await setup();
});
afterAll(async () => {
  await env?.teardown();
});

describe("Worker", () => {
  it("gives handlers the job and the attempt as the broker sent them", async () => {
    const queue = uniqueQueue("view");
    const seen = deferred<{ job: WorkerJob; ctx: JobContext; info: JobInfo; leaseEndsIn: number }>();
    env.worker({
      queues: [queue],
      workerId: "viewer-1",
      leaseDurationMs: 60_000,
      handlers: {
        look: (job, ctx) => seen.resolve({ job, ctx, info: job.info, leaseEndsIn: (ctx.leaseExpiresAt?.getTime() ?? 0) - Date.now() }),
      },
    });
    const before = Date.now();
    const { id } = await env.client.enqueue("look", { n: 7 }, { queue, priority: 3, maxAttempts: 4, headers: { who: "test" } });
    const { job, ctx, info, leaseEndsIn } = await within(seen.promise, 10_000, "the handler");
    expect(job).toMatchObject({ id, type: "look", queue, payload: { n: 7 }, contentType: "application/json", attempt: 1, maxAttempts: 4, priority: 3 });
    expect(job.headers).toEqual({ who: "test" });
    expect(job.createdAt!.getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(info).toMatchObject({ id, state: "RUNNING", attempt: 1, workerId: "viewer-1", errors: [], headers: { who: "test" } });
    expect(info.runAt).toBeInstanceOf(Date);
    expect(ctx).toMatchObject({ id, type: "look", queue, attempt: 1, maxAttempts: 4, workerId: "viewer-1", headers: { who: "test" } });
    expect(leaseEndsIn).toBeGreaterThan(50_000);
    expect(ctx.signal.aborted).toBe(false);
    expect(ctx.span.isRecording()).toBe(false);
  });

  it("acks on its Lease stream, with no Ack call, and every job completes", async () => {
    const queue = uniqueQueue("streamacks");
    const ackCalls = async () => {
      const body = await (await fetch(`${env.tb.url}/metrics`)).text();
      return body
        .split("\n")
        .filter((l) => l.startsWith('jobwire_rpc_duration_seconds_count{method="Ack"'))
        .reduce((n, l) => n + Number(l.split(" ")[1]), 0);
    };
    const before = await ackCalls();
    let handled = 0;
    const all = deferred<void>();
    env.worker({ queues: [queue], concurrency: 8, handlers: { t: () => void (++handled === 40 && all.resolve()) } });
    const ids = await Promise.all(Array.from({ length: 40 }, () => env.client.enqueue("t", {}, { queue }).then((r) => r.id)));
    await within(all.promise, 10_000, "40 jobs handled");
    for (const id of ids) await waitForState(env.client, id, "COMPLETED", 10_000);
    expect(await ackCalls()).toBe(before);
  });

  it("never runs more handlers than its concurrency", async () => {
    const queue = uniqueQueue("concurrency");
    let running = 0;
    let peak = 0;
    const { worker, done } = env.worker({
      queues: [queue],
      concurrency: 3,
      handlers: {
        work: async () => {
          running++;
          peak = Math.max(peak, running);
          await work(100);
          running--;
        },
      },
    });
    const results = await env.client.enqueueMany(Array.from({ length: 12 }, () => ({ type: "work", queue })));
    for (const r of results) await waitForState(env.client, r.id, "COMPLETED", 15_000);
    expect(peak).toBe(3);
    await worker.stop();
    await done;
  });

  it("keeps several long jobs alive past their lease with batched heartbeats", async () => {
    const queue = uniqueQueue("heartbeat");
    env.worker({ queues: [queue], concurrency: 3, handlers: { long: (_j, ctx) => work(1800, ctx.signal) } });
    const results = await env.client.enqueueMany(
      Array.from({ length: 3 }, () => ({ type: "long", queue, leaseDurationMs: 600 })),
    );
    for (const r of results) {
      const job = await waitForState(env.client, r.id, "COMPLETED", 15_000);
      expect(job.attempt).toBe(1);
      expect(job.errors).toEqual([]);
    }
  });

  it("fails a permanent error straight to DEAD, and retries a transient one with backoff", async () => {
    const queue = uniqueQueue("failures");
    env.worker({
      queues: [queue],
      handlers: {
        perm: () => {
          throw new PermanentError("invalid address");
        },
        flaky: (_job, ctx) => {
          if (ctx.attempt < 3) throw new Error(`transient ${ctx.attempt}`);
        },
      },
    });
    const [perm, flaky] = await env.client.enqueueMany([
      { type: "perm", queue, maxAttempts: 10 },
      { type: "flaky", queue, retry: { initialBackoffMs: 200, multiplier: 2, jitter: 0 } },
    ]);
    const dead = await waitForState(env.client, perm!.id, "DEAD");
    expect(dead.attempt).toBe(1);
    expect(dead.errors.map((e) => e.message)).toEqual(["invalid address"]);

    const done = await waitForState(env.client, flaky!.id, "COMPLETED", 15_000);
    expect(done.attempt).toBe(3);
    expect(done.errors.map((e) => [e.attempt, e.message])).toEqual([
      [1, "transient 1"],
      [2, "transient 2"],
    ]);
    // Backoff 200ms then 400ms (no jitter): attempts are spaced at least that far.
    const [e1, e2] = done.errors;
    expect(e2!.at!.getTime() - e1!.at!.getTime()).toBeGreaterThanOrEqual(190);
    expect(done.finishedAt!.getTime() - e2!.at!.getTime()).toBeGreaterThanOrEqual(390);
  });

  it("fails a job whose type has no handler permanently, with a clear message", async () => {
    const queue = uniqueQueue("nohandler");
    env.worker({ queues: [queue], handlers: { known: () => {} } });
    const { id } = await env.client.enqueue("unknown_type", {}, { queue });
    const job = await waitForState(env.client, id, "DEAD");
    expect(job.errors[0]?.message).toMatch(/no handler for job type "unknown_type".*handles: known/);
  });

  it("passes raw bytes through untouched", async () => {
    const queue = uniqueQueue("bytes");
    const got = deferred<unknown>();
    env.worker({ queues: [queue], handlers: { bin: (job) => got.resolve(job.payload) } });
    const bytes = new Uint8Array([0, 1, 2, 254, 255]);
    const { id } = await env.client.enqueue("bin", bytes, { queue });
    expect(await within(got.promise, 10_000, "the handler")).toEqual(bytes);
    const job = await waitForState(env.client, id, "COMPLETED");
    expect(job.contentType).toBe("application/octet-stream");
    expect(decodeJobPayload(job)).toEqual(bytes);
  });

  it("recovers a job from a worker process killed with SIGKILL", async () => {
    const queue = uniqueQueue("crash");
    const { id } = await env.client.enqueue("work", {}, { queue, leaseDurationMs: 1000 });
    let child: Child | undefined;
    try {
      child = spawnNode(path.join(FIXTURES, "worker.mjs"), { JOBWIRE_ADDRESS: env.tb.url, QUEUE: queue, MODE: "hang" });
      await child.waitFor(new RegExp(`^started ${id} 1$`), 15_000);
      child.proc.kill("SIGKILL");
      expect(await within(child.exited, 5000, "the killed worker to exit")).toBe("SIGKILL");
    } finally {
      await reap(child);
    }
    // A second worker gets the job once the dead worker's lease expires.
    const rescued = deferred<number>();
    env.worker({ queues: [queue], handlers: { work: (_j, ctx) => rescued.resolve(ctx.attempt) } });
    expect(await within(rescued.promise, 10_000, "redelivery")).toBe(2);
    const job = await waitForState(env.client, id, "COMPLETED");
    expect(job.attempt).toBe(2);
  });

  it("drains on SIGTERM: in-flight jobs finish and nothing is left RUNNING", async () => {
    const queue = uniqueQueue("sigterm");
    let child: Child | undefined;
    try {
      child = spawnNode(path.join(FIXTURES, "worker.mjs"), {
        JOBWIRE_ADDRESS: env.tb.url,
        QUEUE: queue,
        CONCURRENCY: "2",
        MODE: "sleep:500",
      });
      const results = await env.client.enqueueMany(Array.from({ length: 4 }, () => ({ type: "work", queue })));
      await child.waitFor(/^started /, 15_000);
      await eventually(() => (child!.lines.filter((l) => l.startsWith("started ")).length >= 2 ? true : undefined), 5000, "two started");
      child.proc.kill("SIGTERM");
      // Jobs take 500ms; the drain must not wait out any internal timeout.
      expect(await within(child.exited, 4000, "the worker to exit")).toBe(0);
      expect(child.lines).toContain("stopped");
      const started = child.lines.filter((l) => l.startsWith("started ")).map((l) => l.split(" ")[1]);
      const finished = child.lines.filter((l) => l.startsWith("finished ")).map((l) => l.split(" ")[1]);
      expect(finished.sort()).toEqual(started.sort());
      for (const r of results) {
        const j = await env.client.getJob(r.id);
        expect(j.state, `job ${r.id}`).toBe(started.includes(r.id) ? "COMPLETED" : "AVAILABLE");
      }
      const { jobs } = await env.client.listJobs({ queue, states: ["RUNNING"] });
      expect(jobs).toEqual([]);
    } finally {
      await reap(child);
    }
  });

  it("handles SIGINT the same way, and stops at once when idle", async () => {
    const queue = uniqueQueue("sigint");
    let child: Child | undefined;
    try {
      child = spawnNode(path.join(FIXTURES, "worker.mjs"), { JOBWIRE_ADDRESS: env.tb.url, QUEUE: queue });
      const { id } = await env.client.enqueue("work", {}, { queue });
      await child.waitFor(/^finished /, 15_000);
      await waitForState(env.client, id, "COMPLETED");
      child.proc.kill("SIGINT");
      expect(await within(child.exited, 10_000, "the worker to exit")).toBe(0);
      expect(child.lines).toContain("stopped");
    } finally {
      await reap(child);
    }
  });

  it("reconnects after the broker restarts, and acks the job it held across the restart", async () => {
    // A broker of its own, so restarting it disturbs no other test.
    const first = await startTestBroker();
    const port = first.app.port;
    const databaseUrl = first.databaseUrl;
    let second: Awaited<ReturnType<typeof startTestBroker>> | undefined;
    const client = new JobwireClient({ address: first.url, timeoutMs: 5000 });
    const queue = uniqueQueue("restart");
    const release = deferred();
    const started = deferred<string>();
    const seen: string[] = [];
    let connects = 0;
    const disconnects: (Code | undefined)[] = [];
    const worker = new Worker({
      address: first.url,
      queues: [queue],
      handleSignals: false,
      logger: testLogger,
      reconnectBackoff: { initialMs: 50, maxMs: 300 },
      handlers: {
        work: async (job) => {
          seen.push(job.id);
          if (!started.settled) started.resolve(job.id);
          if (job.payload === "hold") await release.promise;
        },
      },
      onEvent: (e) => {
        if (e.type === "connected") connects++;
        if (e.type === "disconnected") disconnects.push(e.error?.code);
      },
    });
    const done = worker.run();
    try {
      const { id: held } = await client.enqueue("work", "hold", { queue, leaseDurationMs: 30_000 });
      await within(started.promise, 10_000, "the first job to start");

      await first.stop(); // drains: the Lease stream ends with UNAVAILABLE
      expect(await eventually(() => (disconnects.length > 0 ? disconnects : undefined), 5000, "the disconnect")).toEqual([
        Code.Unavailable,
      ]);
      second = await startTestBroker({ port }, { databaseUrl });
      // The job outlived the stream and the broker: its lease still holds.
      release.resolve();
      const j1 = await waitForState(client, held, "COMPLETED", 15_000);
      expect(j1.attempt).toBe(1);

      const { id: after } = await client.enqueue("work", "after", { queue });
      const j2 = await waitForState(client, after, "COMPLETED", 15_000);
      expect(j2.attempt).toBe(1);
      expect(seen).toEqual([held, after]);
      expect(connects).toBeGreaterThanOrEqual(1);
    } finally {
      release.resolve();
      await worker.stop();
      await done.catch(() => {});
      client.close();
      await second?.stop();
      await first.stop().catch(() => {});
    }
  });
});

describe("Worker configuration", () => {
  it("rejects run() when the broker refuses the Lease stream's queue name", async () => {
    const { done } = env.worker({ queues: ["not a valid queue name!"], handlers: { t: () => {} } });
    await expect(within(done, 10_000, "run() to settle")).rejects.toMatchObject({ code: Code.InvalidArgument });
  });
});

describe("JobwireClient", () => {
  it("returns the first job's id for a duplicate idempotency key", async () => {
    const queue = uniqueQueue("idem");
    const a = await env.client.enqueue("t", { n: 1 }, { queue, idempotencyKey: "user-42-welcome" });
    const b = await env.client.enqueue("t", { n: 2 }, { queue, idempotencyKey: "user-42-welcome" });
    expect(a.duplicate).toBe(false);
    expect(b).toEqual({ id: a.id, duplicate: true });
  });

  it("rejects with typed errors", async () => {
    const queue = uniqueQueue("errors");
    await expect(env.client.getJob("999999999")).rejects.toBeInstanceOf(NotFoundError);
    env.worker({ queues: [queue], handlers: { t: () => {} } });
    const { id } = await env.client.enqueue("t", {}, { queue });
    await waitForState(env.client, id, "COMPLETED");
    await expect(env.client.cancelJob(id)).rejects.toBeInstanceOf(FailedPreconditionError);
  });

  it("cancels a waiting job at once and replays it when asked", async () => {
    const queue = uniqueQueue("cancel-replay");
    const { id } = await env.client.enqueue("t", {}, { queue, delayMs: 60_000 });
    expect((await env.client.cancelJob(id)).state).toBe("CANCELLED");
    const dry = await env.client.replay({ jobIds: [id], includeCancelled: true, dryRun: true });
    expect(dry.jobIds).toEqual([id]);
    expect((await env.client.getJob(id)).state).toBe("CANCELLED");
    const r = await env.client.replay({ jobIds: [id], includeCancelled: true });
    expect(r).toEqual({ replayed: 1, jobIds: [id] });
    expect((await env.client.getJob(id)).state).toBe("AVAILABLE");
  });

  it("retries UNAVAILABLE until the broker answers, within the call's deadline", async () => {
    // Nothing listens here yet; a broker comes up on the port while the call retries.
    const probe = await startTestBroker();
    const port = probe.app.port;
    const databaseUrl = probe.databaseUrl;
    await probe.stop();
    const client = new JobwireClient({ address: `http://127.0.0.1:${port}`, retry: { initialMs: 100, maxMs: 200, maxAttempts: 50 } });
    let revived: Awaited<ReturnType<typeof startTestBroker>> | undefined;
    try {
      const pending = client.enqueue("t", {}, { queue: uniqueQueue("retry"), timeoutMs: 15_000 });
      revived = await startTestBroker({ port }, { databaseUrl });
      const { id } = await within(pending, 15_000, "the retried enqueue");
      expect((await client.getJob(id)).state).toBe("AVAILABLE");
    } finally {
      client.close();
      await revived?.stop();
    }
  });
});
