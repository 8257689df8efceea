/**
 * The shared client conformance scenarios (test/conformance/scenarios.md),
 * run by the TypeScript client against a real broker over gRPC on loopback.
 * Each test's name carries the scenario id.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { PermanentError, JobCancelledError, type JobContext } from "@jobwire/client";
import { type LeaseRequest, LeaseRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Env, deferred, setup, uniqueQueue, waitForState, within, work } from "./helpers.js";

let env: Env;
beforeAll(async () => {
  env = await setup();
});
afterAll(async () => {
  await env?.teardown();
});

describe("conformance", () => {
  it("conformance: enqueue_and_process", async () => {
    const queue = uniqueQueue("conf-enqueue_and_process");
    const seen = deferred<unknown>();
    env.worker({
      queues: [queue],
      handlers: {
        greet: (job) => {
          seen.resolve(job.payload);
        },
      },
    });
    const { id } = await env.client.enqueue("greet", { name: "ada" }, { queue });
    expect(await within(seen.promise, 10_000, "the handler")).toEqual({ name: "ada" });
    const job = await waitForState(env.client, id, "COMPLETED");
    expect(job.attempt).toBe(1);
  });

  it("conformance: transient_failure_then_retry", async () => {
    const queue = uniqueQueue("conf-transient_failure_then_retry");
    env.worker({
      queues: [queue],
      handlers: {
        flaky: (_job, ctx: JobContext) => {
          if (ctx.attempt === 1) throw new Error("flaky failure on attempt 1");
        },
      },
    });
    const { id } = await env.client.enqueue("flaky", {}, { queue, retry: { initialBackoffMs: 50 } });
    const job = await waitForState(env.client, id, "COMPLETED");
    expect(job.attempt).toBe(2);
    expect(job.errors).toHaveLength(1);
    expect(job.errors[0]?.attempt).toBe(1);
    expect(job.errors[0]?.message).toContain("flaky failure on attempt 1");
  });

  it("conformance: permanent_failure_to_dead", async () => {
    const queue = uniqueQueue("conf-permanent_failure_to_dead");
    env.worker({
      queues: [queue],
      handlers: {
        doomed: () => {
          throw new PermanentError("the account no longer exists");
        },
      },
    });
    const { id } = await env.client.enqueue("doomed", {}, { queue, maxAttempts: 5 });
    const job = await waitForState(env.client, id, "DEAD");
    expect(job.attempt).toBe(1);
    expect(job.errors).toHaveLength(1);
    expect(job.errors[0]?.message).toContain("the account no longer exists");
  });

  it("conformance: heartbeat_past_the_lease", async () => {
    const queue = uniqueQueue("conf-heartbeat_past_the_lease");
    env.worker({
      queues: [queue],
      handlers: {
        slow: (_job, ctx) => work(2500, ctx.signal),
      },
    });
    const { id } = await env.client.enqueue("slow", {}, { queue, leaseDurationMs: 1000 });
    const job = await waitForState(env.client, id, "COMPLETED", 15_000);
    expect(job.attempt).toBe(1);
    expect(job.errors).toEqual([]);
  });

  it("conformance: cancellation", async () => {
    const queue = uniqueQueue("conf-cancellation");
    const started = deferred();
    const aborted = deferred<unknown>();
    env.worker({
      queues: [queue],
      handlers: {
        wait_for_cancel: async (_job, ctx) => {
          started.resolve();
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
          aborted.resolve(ctx.signal.reason);
          throw ctx.signal.reason;
        },
      },
    });
    const { id } = await env.client.enqueue("wait_for_cancel", {}, { queue, leaseDurationMs: 1000 });
    await within(started.promise, 10_000, "the handler to start");
    const cancelledAt = Date.now();
    const after = await env.client.cancelJob(id);
    expect(after.state === "RUNNING" ? after.cancelRequested : after.state === "CANCELLED").toBe(true);
    // Heartbeats go every third of the 1s lease: a few of them is ~1s.
    const reason = await within(aborted.promise, 2000, "the handler's signal to abort");
    expect(Date.now() - cancelledAt).toBeLessThan(2000);
    expect(reason).toBeInstanceOf(JobCancelledError);
    const job = await waitForState(env.client, id, "CANCELLED");
    expect(job.attempt).toBe(1);
  });

  it("conformance: stale_lease_refused", async () => {
    const queue = uniqueQueue("conf-stale_lease_refused");
    const { id } = await env.client.enqueue("stale", {}, { queue });
    const stream = rawLease(queue, 1000);
    try {
      const first = await stream.next(10_000);
      expect(first.job?.id).toBe(id);
      // The first lease expires unheartbeated; the reaper makes the job due again
      // and the same stream (credit returned) takes the second attempt.
      stream.credit(1);
      const second = await stream.next(15_000);
      expect(second.job?.id).toBe(id);
      expect(second.leaseToken).not.toBe(first.leaseToken);

      const ack = await env.client.workers.ack({ leaseTokens: [first.leaseToken] });
      expect(ack.lostLeaseTokens).toEqual([first.leaseToken]);
      const nackErr = await env.client.workers.nack({ leaseToken: first.leaseToken, error: "stale" }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(nackErr).toBeInstanceOf(ConnectError);
      expect((nackErr as ConnectError).code).toBe(Code.FailedPrecondition);
      const hb = await env.client.workers.heartbeat({ leaseTokens: [first.leaseToken] });
      expect(hb.results).toHaveLength(1);
      expect(hb.results[0]?.lost).toBe(true);

      const ack2 = await env.client.workers.ack({ leaseTokens: [second.leaseToken] });
      expect(ack2.lostLeaseTokens).toEqual([]);
      const job = await waitForState(env.client, id, "COMPLETED");
      expect(job.attempt).toBe(2);
    } finally {
      stream.close();
    }
  });

  it("conformance: graceful_shutdown", async () => {
    const queue = uniqueQueue("conf-graceful_shutdown");
    let started = 0;
    const bothStarted = deferred();
    const { worker, done } = env.worker({
      queues: [queue],
      concurrency: 2,
      handlers: {
        slow: async () => {
          if (++started === 2) bothStarted.resolve();
          await work(300);
        },
      },
    });
    const [a, b] = await env.client.enqueueMany([
      { type: "slow", queue },
      { type: "slow", queue },
    ]);
    await within(bothStarted.promise, 10_000, "both handlers to start");
    await within(worker.stop(), 10_000, "stop()");
    await within(done, 1000, "run() to return");
    expect((await env.client.getJob(a!.id)).state).toBe("COMPLETED");
    expect((await env.client.getJob(b!.id)).state).toBe("COMPLETED");
    const { jobs } = await env.client.listJobs({ queue, states: ["RUNNING"] });
    expect(jobs).toEqual([]);
  });
});

/**
 * A raw Lease stream through the client's generated WorkerService client:
 * no worker runtime, so nothing heartbeats or acks behind the test's back.
 */
function rawLease(queue: string, leaseMs: number) {
  const requests: LeaseRequest[] = [
    create(LeaseRequestSchema, {
      msg: {
        case: "open",
        value: { queues: [queue], workerId: "raw-conformance", maxInFlight: 1, leaseDuration: { seconds: BigInt(Math.floor(leaseMs / 1000)), nanos: (leaseMs % 1000) * 1e6 } },
      },
    }),
  ];
  let wake: (() => void) | undefined;
  let closed = false;
  const abort = new AbortController();
  const input: AsyncIterable<LeaseRequest> = {
    [Symbol.asyncIterator]: () => ({
      async next() {
        while (requests.length === 0 && !closed) await new Promise<void>((r) => (wake = r));
        const v = requests.shift();
        return v === undefined ? { value: undefined, done: true } : { value: v, done: false };
      },
      async return() {
        closed = true;
        return { value: undefined, done: true };
      },
      async throw(e: unknown) {
        closed = true;
        throw e;
      },
    }),
  };
  const it = env.client.workers.lease(input, { signal: abort.signal, timeoutMs: 0 })[Symbol.asyncIterator]();
  const buffered: NonNullable<Awaited<ReturnType<typeof it.next>>["value"]>["jobs"] = [];
  return {
    /** The next leased job; keepalives are skipped. */
    async next(timeoutMs: number) {
      const deadline = Date.now() + timeoutMs;
      while (buffered.length === 0) {
        const r = await within(it.next(), Math.max(1, deadline - Date.now()), "a leased job");
        if (r.done) throw new Error("the Lease stream ended");
        buffered.push(...r.value.jobs);
      }
      return buffered.shift()!;
    },
    credit(count: number) {
      requests.push(create(LeaseRequestSchema, { msg: { case: "credit", value: { count } } }));
      wake?.();
    },
    close() {
      closed = true;
      wake?.();
      abort.abort();
    },
  };
}
