import { trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, ms, uniqueQueue } from "./helpers.js";

const exporter = new InMemorySpanExporter();
let tb: TestBroker;
beforeAll(async () => {
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  provider.register();
  tb = await startTestBroker({}, { tracing: true });
});
afterAll(async () => {
  await tb.stop();
  trace.disable();
});

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = "00f067aa0ba902b7";
const traceparent = `00-${TRACE_ID}-${PARENT}-01`;

async function get(path: string): Promise<{ status: number; type: string; body: string }> {
  const res = await fetch(tb.url + path);
  return { status: res.status, type: res.headers.get("content-type") ?? "", body: await res.text() };
}

describe("HTTP endpoints on the gRPC port", () => {
  it("serves Prometheus metrics that follow the broker's work", async () => {
    const queue = uniqueQueue("metrics");
    await enqueue(tb, { queue }, { queue }, { queue, schedule: { case: "delay", value: ms(600_000) } });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 1 });
    const [l] = await s.take(1);
    await tb.workers.ack({ leaseTokens: [l!.leaseToken] });
    s.kill();
    const { status, type, body } = await get("/metrics");
    expect(status).toBe(200);
    expect(type).toContain("text/plain");
    expect(body).toContain(`jobwire_jobs_enqueued_total{queue="${queue}"} 3`);
    expect(body).toContain(`jobwire_jobs_leased_total{queue="${queue}"} 1`);
    expect(body).toMatch(/jobwire_jobs_acked_total\{queue="[^"]+"\} \d+/);
    expect(body).toContain(`jobwire_queue_jobs{queue="${queue}",state="available"} 1`);
    expect(body).toContain(`jobwire_queue_jobs{queue="${queue}",state="scheduled"} 1`);
    expect(body).toContain("# TYPE jobwire_queue_oldest_available_seconds gauge");
  });

  it("answers health checks and serves the dashboard", async () => {
    expect(await get("/healthz")).toMatchObject({ status: 200, body: "ok\n" });
    expect(await get("/readyz")).toMatchObject({ status: 200, body: "ready\n" });
    const page = await get("/");
    expect(page.status).toBe(200);
    expect(page.type).toContain("text/html");
    expect(page.body).toMatch(/\/assets\/app-\w+\.js/);
    expect((await get("/nope")).status).toBe(404);
  });

  it("lets the dashboard call AdminService over Connect JSON", async () => {
    const res = await fetch(`${tb.url}/jobwire.v1.AdminService/GetQueueStats`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { queues: unknown[] }).queues.length).toBeGreaterThan(0);
  });
});

describe("broker spans", () => {
  it("puts the enqueue, delivery, dead-letter and replay of a job in the producer's trace", async () => {
    exporter.reset();
    const queue = uniqueQueue("traced");
    const [id] = await enqueue(tb, { queue, headers: { traceparent } });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [l] = await s.take(1);
    await tb.workers.nack({ leaseToken: l!.leaseToken, error: "boom", permanent: true });
    await tb.admin.replay({ jobIds: [id!] });
    s.kill();

    const spans = exporter.getFinishedSpans();
    const inTrace = spans.filter((sp) => sp.spanContext().traceId === TRACE_ID);
    const names = inTrace.map((sp) => sp.name);
    expect(names).toEqual(expect.arrayContaining(["jobwire.v1.JobService/Enqueue", `deliver ${queue}`, `dead-letter ${queue}`, `replay ${queue}`]));
    const enq = inTrace.find((sp) => sp.name === "jobwire.v1.JobService/Enqueue")!;
    expect(enq.parentSpanContext?.spanId).toBe(PARENT);
    const dead = inTrace.find((sp) => sp.name === `dead-letter ${queue}`)!;
    expect(dead.attributes).toMatchObject({ "messaging.system": "jobwire", "messaging.destination.name": queue, "messaging.message.id": id });
    // RPCs without trace context get their own traces.
    expect(spans.some((sp) => sp.name === "jobwire.v1.WorkerService/Nack")).toBe(true);
  });

  it("records the reaper's lease expiry in the job's trace", async () => {
    exporter.reset();
    const queue = uniqueQueue("traced");
    await enqueue(tb, { queue, headers: { traceparent }, leaseDuration: ms(100), maxAttempts: 1 });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    await s.take(1);
    s.kill();
    const deadline = Date.now() + 10_000;
    while (!exporter.getFinishedSpans().some((sp) => sp.name === `dead-letter ${queue}`)) {
      if (Date.now() > deadline) throw new Error("no dead-letter span");
      await new Promise((r) => setTimeout(r, 20));
    }
    const names = exporter.getFinishedSpans().filter((sp) => sp.spanContext().traceId === TRACE_ID).map((sp) => sp.name);
    expect(names).toEqual(expect.arrayContaining([`lease expired ${queue}`, `dead-letter ${queue}`]));
  });
});
