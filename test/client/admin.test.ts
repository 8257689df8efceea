/**
 * The TypeScript client's operator API against a real broker: queue
 * configuration with partial updates (and clearing a setting), pause and
 * resume, the connected workers, queue history, WhoAmI; and errors that
 * name their code, with scoped tokens from a tokens file.
 */
import { writeFile, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import {
  Code,
  InvalidArgumentError,
  JobwireClient,
  PermissionDeniedError,
  UnauthenticatedError,
  Worker,
} from "@jobwire/client";
import { type TestBroker, startTestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Env, eventually, setup, testLogger, uniqueQueue, waitForState } from "./helpers.js";

let env: Env;
beforeAll(async () => {
  env = await setup();
});
afterAll(async () => {
  await env?.teardown();
});

describe("queue configuration", () => {
  it("reads an unconfigured queue as all defaults", async () => {
    const queue = uniqueQueue("cfg-empty");
    expect(await env.client.getQueueConfig(queue)).toEqual({ queue, paused: false });
  });

  it("sets only the settings given, clears one given null, and reads every kind back typed", async () => {
    const queue = uniqueQueue("cfg-partial");
    const all = await env.client.setQueueConfig(queue, {
      retry: { initialBackoffMs: 200, maxBackoffMs: 60_000, multiplier: 3, jitter: 0.1 },
      maxAttempts: 4,
      leaseDurationMs: 45_000,
      completedRetentionMs: 0,
      maxRunning: 8,
      maxRunningPerKey: 2,
      rateLimit: { count: 100, periodMs: 1000 },
      rateLimitPerKey: { count: 5, periodMs: 60_000 },
    });
    expect(all).toMatchObject({
      queue,
      retry: { initialBackoffMs: 200, maxBackoffMs: 60_000, multiplier: 3, jitter: expect.closeTo(0.1, 5) },
      maxAttempts: 4,
      leaseDurationMs: 45_000,
      completedRetentionMs: 0,
      maxRunning: 8,
      maxRunningPerKey: 2,
      rateLimit: { count: 100, periodMs: 1000 },
      rateLimitPerKey: { count: 5, periodMs: 60_000 },
      paused: false,
    });
    expect(all.updatedAt).toBeInstanceOf(Date);

    // One setting changed, one cleared, the rest kept.
    const after = await env.client.setQueueConfig(queue, { maxAttempts: 9, rateLimit: null });
    expect(after.maxAttempts).toBe(9);
    expect(after.rateLimit).toBeUndefined();
    expect(after).toMatchObject({ maxRunning: 8, maxRunningPerKey: 2, leaseDurationMs: 45_000, rateLimitPerKey: { count: 5, periodMs: 60_000 } });
    expect(await env.client.getQueueConfig(queue)).toEqual(after);
  });

  it("pauses and resumes, and the config and stats say so", async () => {
    const queue = uniqueQueue("cfg-pause");
    await env.client.setQueueConfig(queue, { maxRunning: 3 });
    expect(await env.client.pauseQueue(queue)).toMatchObject({ queue, paused: true, maxRunning: 3 });
    expect((await env.client.getQueueConfig(queue)).paused).toBe(true);
    const { id } = await env.client.enqueue("t", {}, { queue });
    const [stats] = await env.client.getQueueStats([queue]);
    expect(stats).toMatchObject({ queue, paused: true, available: 1, running: 0 });
    expect(await env.client.resumeQueue(queue)).toMatchObject({ paused: false, maxRunning: 3 });
    expect((await env.client.getJob(id)).state).toBe("AVAILABLE");
  });
});

describe("enqueue with flow-control keys", () => {
  it("stores the concurrency and ordering keys, single and batched", async () => {
    const queue = uniqueQueue("keys");
    const one = await env.client.enqueue("t", {}, { queue, concurrencyKey: "tenant:42", orderingKey: "account:7" });
    const [two] = await env.client.enqueueMany([{ type: "t", queue, concurrencyKey: "tenant:43", orderingKey: "account:8" }]);
    expect(await env.client.getJob(one.id)).toMatchObject({ concurrencyKey: "tenant:42", orderingKey: "account:7", errorsDropped: 0 });
    expect(await env.client.getJob(two!.id)).toMatchObject({ concurrencyKey: "tenant:43", orderingKey: "account:8" });
  });
});

describe("workers and history", () => {
  it("lists the worker's Lease stream with its id, queues and credit", async () => {
    const queue = uniqueQueue("list-workers");
    env.worker({ queues: [queue], concurrency: 3, workerId: "lister-1", handlers: { t: () => {} } });
    const streams = await eventually(async () => {
      const ws = await env.client.listWorkers(queue);
      return ws.length > 0 ? ws : undefined;
    }, 10_000, "the worker's stream to be listed");
    expect(streams).toHaveLength(1);
    expect(streams[0]).toMatchObject({ workerId: "lister-1", queues: [queue], maxInFlight: 3, credit: 3, jobsHeld: 0 });
    expect(streams[0]!.connectedAt).toBeInstanceOf(Date);
    expect(streams[0]!.brokerId).not.toBe("");
    expect((await env.client.listWorkers("no-such-queue")).length).toBe(0);
  });

  it("returns the queue history as typed samples", async () => {
    const queue = uniqueQueue("history");
    env.worker({ queues: [queue], handlers: { t: () => {} } });
    const { id } = await env.client.enqueue("t", {}, { queue });
    await waitForState(env.client, id, "COMPLETED");
    const h = await env.client.getQueueHistory(queue);
    expect(h.intervalMs).toBeGreaterThan(0);
    for (const s of h.samples) {
      expect(s.queue).toBe(queue);
      expect(s.at).toBeInstanceOf(Date);
      expect(typeof s.enqueued).toBe("number");
    }
  });

  it("says who the caller is, with auth off", async () => {
    expect(await env.client.whoAmI()).toEqual({ authEnabled: false, name: "", scopes: ["enqueue", "work", "read", "admin"], queues: ["*"] });
  });
});

describe("errors name their code", () => {
  it("rejects a bad request with invalid_argument in the message and the code on the error", async () => {
    const err = await env.client.enqueue("t", {}, { queue: "bad queue name!" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as InvalidArgumentError).code).toBe(Code.InvalidArgument);
    expect((err as Error).message).toMatch(/^invalid_argument: /);
  });

  describe("with scoped tokens", () => {
    const SECRETS = { reader: "reader-secret-0123456789", billing: "billing-secret-0123456789", worker: "worker-secret-0123456789" };
    let tb: TestBroker;
    let dir: string;
    const clients: JobwireClient[] = [];
    const client = (token?: string) => {
      const c = new JobwireClient({ address: tb.url, ...(token ? { token } : {}), retry: { maxAttempts: 1 } });
      clients.push(c);
      return c;
    };

    beforeAll(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), "jobwire-auth-"));
      const file = path.join(dir, "tokens.json");
      await writeFile(
        file,
        JSON.stringify({
          tokens: [
            { name: "reader", token: SECRETS.reader, scopes: ["read"] },
            { name: "billing", token: SECRETS.billing, scopes: ["enqueue", "read"], queues: ["billing.*"] },
            { name: "enqueuer-only", token: SECRETS.worker, scopes: ["enqueue"] },
          ],
        }),
      );
      tb = await startTestBroker({ authFile: file });
    });
    afterAll(async () => {
      for (const c of clients) c.close();
      await tb?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("says unauthenticated without a token", async () => {
      const err = await client().getQueueStats().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnauthenticatedError);
      expect((err as UnauthenticatedError).code).toBe(Code.Unauthenticated);
      expect((err as Error).message).toMatch(/^unauthenticated: /);
    });

    it("says permission_denied, naming the scope or the queue", async () => {
      const reader = client(SECRETS.reader);
      const noScope = await reader.pauseQueue("billing.invoices").catch((e: unknown) => e);
      expect(noScope).toBeInstanceOf(PermissionDeniedError);
      expect((noScope as PermissionDeniedError).code).toBe(Code.PermissionDenied);
      expect((noScope as Error).message).toMatch(/^permission_denied: .*admin/);
      const billing = client(SECRETS.billing);
      await billing.enqueue("t", {}, { queue: "billing.invoices" });
      const otherQueue = await billing.enqueue("t", {}, { queue: "emails" }).catch((e: unknown) => e);
      expect((otherQueue as Error).message).toMatch(/^permission_denied: .*emails/);
    });

    it("tells a token who it is", async () => {
      expect(await client(SECRETS.billing).whoAmI()).toEqual({ authEnabled: true, name: "billing", scopes: ["enqueue", "read"], queues: ["billing.*"] });
    });

    it("ends a worker whose token lacks the work scope with permission_denied", async () => {
      const w = new Worker({ address: tb.url, token: SECRETS.worker, queues: ["q"], handlers: { t: () => {} }, handleSignals: false, logger: testLogger });
      const err = await w.run().catch((e: unknown) => e);
      expect((err as PermissionDeniedError).code).toBe(Code.PermissionDenied);
      expect((err as Error).message).toMatch(/^permission_denied: /);
    });
  });
});
