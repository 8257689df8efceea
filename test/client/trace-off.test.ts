/**
 * With no OpenTelemetry SDK and no propagator registered, the client skips
 * span work altogether (tracing.ts, otelOff). These tests hold it to the
 * same observable behaviour as the no-op API: handlers get a non-recording
 * span, headers travel unchanged, and an SDK registered later, while the
 * client and worker are running, is used from the next job on.
 */
import type { JobContext, WorkerJob } from "@jobwire/client";
import { type Context, type ContextManager, ROOT_CONTEXT, context, propagation, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type Env, setup, uniqueQueue } from "./helpers.js";

/** A context manager that carries context through synchronous calls only: enough to see what a handler starts in. */
class StackContextManager implements ContextManager {
  private stack: Context[] = [];
  active(): Context {
    return this.stack.at(-1) ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    this.stack.push(ctx);
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.stack.pop();
    }
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.stack = [];
    return this;
  }
}

let env: Env;
beforeAll(async () => {
  env = await setup();
});
afterAll(async () => {
  await env?.teardown();
  trace.disable();
  propagation.disable();
  context.disable();
});

it("runs jobs without spans while OpenTelemetry is off, and with them once an SDK is registered", async () => {
  const queue = uniqueQueue("otel-off");
  const seen: { job: WorkerJob; ctx: JobContext; recording: boolean; active: boolean; activeIsJobSpan: boolean }[] = [];
  const waiters: (() => void)[] = [];
  env.worker({
    queues: [queue],
    handlers: {
      t: async (job, ctx) => {
        const active = trace.getActiveSpan();
        seen.push({ job, ctx, recording: ctx.span.isRecording(), active: active?.isRecording() ?? false, activeIsJobSpan: active === ctx.span });
        waiters.shift()?.();
      },
    },
  });
  const next = () => new Promise<void>((r) => waiters.push(r));

  let ran = next();
  await env.client.enqueue("t", { n: 1 }, { queue, headers: { a: "1" } });
  await ran;
  expect(seen[0]!.recording).toBe(false);
  expect(seen[0]!.active).toBe(false);
  expect(seen[0]!.job.headers).toEqual({ a: "1" });

  // A context manager but still no SDK: the handler runs inside a context
  // whose span is its own non-recording one, as with the no-op API.
  context.setGlobalContextManager(new StackContextManager());
  try {
    ran = next();
    await env.client.enqueue("t", { n: 1.5 }, { queue });
    await ran;
    expect(seen[1]!.recording).toBe(false);
    expect(seen[1]!.activeIsJobSpan).toBe(true);
  } finally {
    context.disable();
  }

  const exporter = new InMemorySpanExporter();
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  provider.register(); // also sets the W3C propagator
  try {
    ran = next();
    await env.client.enqueue("t", { n: 2 }, { queue, headers: { a: "2" } });
    await ran;
    expect(seen[2]!.recording).toBe(true);
    expect(seen[2]!.active).toBe(true);
    expect(seen[2]!.job.headers.a).toBe("2");
    expect(seen[2]!.job.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    const producer = exporter.getFinishedSpans().find((s) => s.name === `send ${queue}`);
    expect(producer?.spanContext().traceId).toBe(seen[2]!.ctx.span.spanContext().traceId);
  } finally {
    await provider.shutdown();
  }
});
