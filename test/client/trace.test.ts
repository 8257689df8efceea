/**
 * Tracing in one process: the OpenTelemetry SDK with an in-memory exporter,
 * a producer enqueueing inside an active span, and a worker on the same
 * broker. Checks span kinds, parent links, messaging attributes and the
 * outcome of each attempt. The multi-process version is trace-e2e.test.ts.
 */
import { PermanentError, TRACE_ATTRIBUTES as A } from "@jobwire/client";
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Env, eventually, setup, uniqueQueue, waitForState } from "./helpers.js";

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

function spansFor(jobId: string, kind: SpanKind): ReadableSpan[] {
  return exporter
    .getFinishedSpans()
    .filter((s) => s.kind === kind && s.attributes[A.messageId] === jobId)
    .sort((a, b) => Number(a.attributes[A.attempt] ?? 0) - Number(b.attributes[A.attempt] ?? 0));
}

describe("tracing", () => {
  it("links the producer span to one consumer span per attempt, with messaging attributes", async () => {
    const queue = uniqueQueue("trace");
    env.worker({
      queues: [queue],
      handlers: {
        flaky: async (_job, ctx) => {
          trace.getTracer("test").startSpan("inside handler").end();
          if (ctx.attempt === 1) throw new Error("first attempt fails");
        },
      },
    });
    const tracer = trace.getTracer("test");
    let rootTraceId = "";
    let rootSpanId = "";
    const { id } = await tracer.startActiveSpan("signup", async (root) => {
      rootTraceId = root.spanContext().traceId;
      rootSpanId = root.spanContext().spanId;
      try {
        return await env.client.enqueue("flaky", { userId: 42 }, { queue, retry: { initialBackoffMs: 50 } });
      } finally {
        root.end();
      }
    });
    const job = await waitForState(env.client, id, "COMPLETED");
    expect(job.headers.traceparent).toMatch(new RegExp(`^00-${rootTraceId}-[0-9a-f]{16}-01$`));

    const [producer] = spansFor(id, SpanKind.PRODUCER);
    expect(producer).toBeDefined();
    expect(producer!.name).toBe(`send ${queue}`);
    expect(producer!.spanContext().traceId).toBe(rootTraceId);
    expect(producer!.parentSpanContext?.spanId).toBe(rootSpanId);
    expect(producer!.attributes).toMatchObject({
      [A.system]: "jobwire",
      [A.destination]: queue,
      [A.messageId]: id,
      [A.jobType]: "flaky",
    });
    expect(job.headers.traceparent).toContain(producer!.spanContext().spanId);

    const consumers = await eventually(() => {
      const c = spansFor(id, SpanKind.CONSUMER);
      return c.length === 2 ? c : undefined;
    }, 5000, "two consumer spans");
    for (const c of consumers) {
      expect(c.name).toBe(`process ${queue}`);
      expect(c.spanContext().traceId).toBe(rootTraceId);
      expect(c.parentSpanContext?.spanId).toBe(producer!.spanContext().spanId);
      expect(c.attributes).toMatchObject({ [A.system]: "jobwire", [A.destination]: queue, [A.jobType]: "flaky" });
    }
    const [first, second] = consumers;
    expect(first!.attributes).toMatchObject({ [A.attempt]: 1, [A.outcome]: "retry" });
    expect(first!.status.code).toBe(SpanStatusCode.ERROR);
    expect(first!.events.some((e) => e.name === "exception")).toBe(true);
    expect(second!.attributes).toMatchObject({ [A.attempt]: 2, [A.outcome]: "completed" });
    expect(second!.status.code).toBe(SpanStatusCode.OK);

    // Spans the handler starts nest under its attempt's CONSUMER span.
    const inner = exporter.getFinishedSpans().filter((s) => s.name === "inside handler" && s.spanContext().traceId === rootTraceId);
    expect(inner.map((s) => s.parentSpanContext?.spanId).sort()).toEqual(consumers.map((c) => c.spanContext().spanId).sort());
  });

  it("records dead and cancelled outcomes", async () => {
    const queue = uniqueQueue("trace-outcomes");
    let startedCancel = false;
    env.worker({
      queues: [queue],
      handlers: {
        perm: () => {
          throw new PermanentError("no such user");
        },
        cancel_me: async (_job, ctx) => {
          startedCancel = true;
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
          throw ctx.signal.reason;
        },
      },
    });
    const { id: dead } = await env.client.enqueue("perm", {}, { queue });
    const { id: cancelled } = await env.client.enqueue("cancel_me", {}, { queue, leaseDurationMs: 1000 });
    await waitForState(env.client, dead, "DEAD");
    await eventually(() => (startedCancel ? true : undefined), 5000, "the cancellable handler to start");
    await env.client.cancelJob(cancelled);
    await waitForState(env.client, cancelled, "CANCELLED");
    const d = await eventually(() => spansFor(dead, SpanKind.CONSUMER)[0], 5000, "the dead job's span");
    expect(d.attributes[A.outcome]).toBe("dead");
    expect(d.status.code).toBe(SpanStatusCode.ERROR);
    const c = await eventually(() => spansFor(cancelled, SpanKind.CONSUMER)[0], 5000, "the cancelled job's span");
    expect(c.attributes[A.outcome]).toBe("cancelled");
    // scenarios.md: retry, dead and cancelled record the handler's exception with status ERROR.
    expect(c.status.code).toBe(SpanStatusCode.ERROR);
    expect(c.events.map((e) => e.name)).toContain("exception");
  });
});
