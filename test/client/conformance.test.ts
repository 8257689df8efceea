/**
 * The shared client conformance scenarios (test/conformance/scenarios.md),
 * run by the TypeScript client against a real broker over gRPC on loopback.
 * Each test's name carries the scenario id.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { PermanentError, JobCancelledError, type JobContext, TRACE_ATTRIBUTES } from "@jobwire/client";
import { type LeaseRequest, LeaseRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { SpanKind, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Deferred, type Env, deferred, eventually, setup, uniqueQueue, waitForState, within, work } from "./helpers.js";

// Consumer spans, for the scenarios that check an attempt's outcome.
const exporter = new InMemorySpanExporter();
const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

let env: Env;
beforeAll(async () => {
  provider.register();
  env = await setup();
});
afterAll(async () => {
  await env?.teardown();
  await provider.shutdown();
  trace.disable();
});

/** The outcome recorded on the consumer span of each of the job's attempts, oldest first. */
function outcomesOf(jobId: string): unknown[] {
  return exporter
    .getFinishedSpans()
    .filter((s) => s.kind === SpanKind.CONSUMER && s.attributes[TRACE_ATTRIBUTES.messageId] === jobId)
    .sort((a, b) => Number(a.attributes[TRACE_ATTRIBUTES.attempt]) - Number(b.attributes[TRACE_ATTRIBUTES.attempt]))
    .map((s) => s.attributes[TRACE_ATTRIBUTES.outcome]);
}

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

  it("conformance: cancel_then_return", async () => {
    const queue = uniqueQueue("conf-cancel_then_return");
    const started = deferred();
    const returned = deferred();
    env.worker({
      queues: [queue],
      handlers: {
        finish_anyway: async (_job, ctx) => {
          started.resolve();
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
          // The work is done: return normally rather than fail with the signal.
          returned.resolve();
        },
      },
    });
    const { id } = await env.client.enqueue("finish_anyway", {}, { queue, leaseDurationMs: 1000 });
    await within(started.promise, 10_000, "the handler to start");
    await env.client.cancelJob(id);
    await within(returned.promise, 3000, "the handler to see the cancel and return");
    const job = await waitForState(env.client, id, "COMPLETED");
    expect(job.attempt).toBe(1);
    expect(await eventually(() => (outcomesOf(id).length > 0 ? outcomesOf(id) : undefined), 5000, "the consumer span")).toEqual(["completed"]);
  });

  it("conformance: pause_and_resume", async () => {
    const queue = uniqueQueue("conf-pause_and_resume");
    const handled = deferred();
    env.worker({ queues: [queue], handlers: { paused_job: () => handled.resolve() } });
    const paused = await env.client.pauseQueue(queue);
    expect(paused.paused).toBe(true);
    const { id } = await env.client.enqueue("paused_job", {}, { queue });
    // The scenario's fixed wait: the pause takes hold within 1 s on every replica.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await env.client.getJob(id)).state).toBe("AVAILABLE");
    expect(handled.settled).toBe(false);
    const [stats] = await env.client.getQueueStats([queue]);
    expect(stats).toMatchObject({ queue, paused: true, available: 1 });
    expect((await env.client.resumeQueue(queue)).paused).toBe(false);
    await waitForState(env.client, id, "COMPLETED");
    expect((await env.client.getQueueStats([queue]))[0]?.paused).toBe(false);
  });

  it("conformance: per_key_limit", async () => {
    const queue = uniqueQueue("conf-per_key_limit");
    await env.client.setQueueConfig(queue, { maxRunningPerKey: 1 });
    const gates = new Map<string, Deferred>();
    const startedK: string[] = [];
    let runningK = 0;
    let peakK = 0;
    const otherStarted = deferred();
    env.worker({
      queues: [queue],
      concurrency: 4,
      handlers: {
        gated: async (job) => {
          const key = (job.payload as { key: string }).key;
          if (key === "k") {
            runningK++;
            peakK = Math.max(peakK, runningK);
            startedK.push(job.id);
          } else {
            otherStarted.resolve();
          }
          const gate = deferred();
          gates.set(job.id, gate);
          await gate.promise;
          if (key === "k") runningK--;
        },
      },
    });
    const jobs = await env.client.enqueueMany([
      ...[1, 2, 3].map(() => ({ type: "gated", queue, payload: { key: "k" }, concurrencyKey: "k" })),
      { type: "gated", queue, payload: { key: "other" }, concurrencyKey: "other" },
    ]);
    const other = jobs[3]!.id;
    await within(otherStarted.promise, 10_000, "the other key's job to start");
    await eventually(() => (startedK.length >= 1 ? true : undefined), 10_000, "a k job to start");
    // The other key's job ran while a k job held the key's one slot.
    expect(runningK).toBe(1);
    gates.get(other)!.resolve();
    for (let released = 0; released < 3; released++) {
      await eventually(() => (startedK.length > released ? true : undefined), 10_000, `k job ${released + 1} to start`);
      gates.get(startedK[released]!)!.resolve();
    }
    for (const j of jobs) await waitForState(env.client, j.id, "COMPLETED");
    expect(peakK).toBe(1);
    expect(new Set(startedK).size).toBe(3);
  });

  it("conformance: ordering_key", async () => {
    const queue = uniqueQueue("conf-ordering_key");
    const events: string[] = [];
    let running = 0;
    let overlapped = false;
    env.worker({
      queues: [queue],
      concurrency: 4,
      handlers: {
        ordered: async (job, ctx) => {
          const n = (job.payload as { n: number }).n;
          if (++running > 1) overlapped = true;
          events.push(`start ${n}.${ctx.attempt}`);
          await work(20);
          events.push(`end ${n}.${ctx.attempt}`);
          running--;
          if (n === 1 && ctx.attempt === 1) throw new Error("job 1 fails its first attempt");
        },
      },
    });
    const jobs = await env.client.enqueueMany(
      [1, 2, 3].map((n) => ({ type: "ordered", queue, payload: { n }, orderingKey: "o", retry: { initialBackoffMs: 50 } })),
    );
    for (const j of jobs) await waitForState(env.client, j.id, "COMPLETED");
    expect(events.filter((e) => e.startsWith("start"))).toEqual(["start 1.1", "start 1.2", "start 2.1", "start 3.1"]);
    expect(events).toEqual(["start 1.1", "end 1.1", "start 1.2", "end 1.2", "start 2.1", "end 2.1", "start 3.1", "end 3.1"]);
    expect(overlapped).toBe(false);
  });

  it("conformance: queue_config_partial", async () => {
    const queue = uniqueQueue("conf-queue_config_partial");
    expect((await env.client.setQueueConfig(queue, { maxRunning: 5 })).maxRunning).toBe(5);
    const afterSecond = await env.client.setQueueConfig(queue, { maxAttempts: 3 });
    expect(afterSecond).toMatchObject({ maxRunning: 5, maxAttempts: 3 });
    const cfg = await env.client.getQueueConfig(queue);
    expect(cfg).toMatchObject({ queue, maxRunning: 5, maxAttempts: 3, paused: false });
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
