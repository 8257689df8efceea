/**
 * One job's whole life in one trace, across three processes: a producer, the
 * broker (`node server/dist/main.js`) and a worker. Each exports OTLP/HTTP
 * JSON to a receiver this test runs; the test then checks that the spans
 * share one trace id, that each attempt's CONSUMER span is the child of the
 * producer's span, and that a job that fails once has exactly two.
 *
 * The broker's spans are required: the Enqueue RPC under the producer's
 * span, a "deliver" span per attempt, the Nack inside the failed attempt,
 * and links from the Ack and from a Replay to the jobs' traces.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { JobwireClient } from "@jobwire/client";
import { createTestDatabase } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Child, FIXTURES, REPO_ROOT, eventually, reap, spawnNode, uniqueQueue, waitForState, within } from "./helpers.js";

/** One span as OTLP/JSON carries it, flattened with its service name. */
interface OtlpSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  status: { code?: number };
  events: { name: string }[];
  links: { traceId: string; spanId: string }[];
}

// OTLP's SpanKind numbering (not the API's): 2 = SERVER, 4 = PRODUCER, 5 = CONSUMER.
const KIND_PRODUCER = 4;
const KIND_CONSUMER = 5;
const KIND_SERVER = 2;
const STATUS_ERROR = 2;

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
}

function value(v: OtlpValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.boolValue !== undefined) return v.boolValue;
  return v.doubleValue;
}

function attrs(list: { key: string; value: OtlpValue }[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map((a) => [a.key, value(a.value)]));
}

/** A minimal OTLP/HTTP receiver: POST /v1/traces with JSON bodies. */
function startReceiver(): Promise<{ url: string; spans: OtlpSpan[]; close(): Promise<void> }> {
  const spans: OtlpSpan[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/v1/traces") {
        res.writeHead(404).end();
        return;
      }
      if (!(req.headers["content-type"] ?? "").includes("json")) {
        res.writeHead(415).end("this test receiver accepts OTLP/JSON only");
        return;
      }
      const doc = JSON.parse(body) as any;
      for (const rs of doc.resourceSpans ?? []) {
        const service = String(attrs(rs.resource?.attributes)["service.name"] ?? "");
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              service,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId ?? "",
              name: s.name,
              kind: s.kind,
              attributes: attrs(s.attributes),
              status: s.status ?? {},
              events: s.events ?? [],
              links: (s.links ?? []).map((l: { traceId: string; spanId: string }) => ({ traceId: l.traceId, spanId: l.spanId })),
            });
          }
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        spans,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}

let receiver: Awaited<ReturnType<typeof startReceiver>>;
let broker: Child | undefined;
let worker: Child | undefined;
let producer: Child | undefined;

beforeAll(async () => {
  receiver = await startReceiver();
});
afterAll(async () => {
  await Promise.all([reap(producer), reap(worker), reap(broker)]);
  await receiver?.close();
});

function otelEnv(service: string): Record<string, string> {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_SERVICE_NAME: service,
    OTEL_BSP_SCHEDULE_DELAY: "100",
  };
}

describe("tracing across processes", () => {
  it("puts producer, broker and worker spans of one job in one trace", async () => {
    const databaseUrl = await createTestDatabase();
    broker = spawnNode(path.join(REPO_ROOT, "server/dist/main.js"), {
      JOBWIRE_PORT: "0",
      DATABASE_URL: databaseUrl,
      JOBWIRE_REAPER_INTERVAL_MS: "200",
      ...otelEnv("jobwire-broker"),
    });
    const [, address] = await broker.waitFor(/jobwire listening on (http:\/\/\S+)/, 30_000);
    const queue = uniqueQueue("trace-e2e");
    const common = { JOBWIRE_ADDRESS: address!, QUEUE: queue };

    worker = spawnNode(path.join(FIXTURES, "trace-worker.mjs"), { ...common, ...otelEnv("trace-worker") });
    producer = spawnNode(path.join(FIXTURES, "trace-producer.mjs"), { ...common, ...otelEnv("trace-producer") });
    const [, jobId, traceId] = await producer.waitFor(/^enqueued (\S+) ([0-9a-f]{32})$/, 15_000);
    expect(await within(producer.exited, 10_000, "the producer to exit")).toBe(0);

    const client = new JobwireClient({ address: address! });
    // A second job, in a trace of its own, that an operator cancels and replays.
    const replayTrace = "5".repeat(32);
    try {
      const job = await waitForState(client, jobId!, "COMPLETED", 15_000);
      expect(job.attempt).toBe(2);
      const later = await client.enqueue("flaky", {}, {
        queue: uniqueQueue("trace-replay"),
        runAt: new Date(Date.now() + 3600_000),
        headers: { traceparent: `00-${replayTrace}-${"6".repeat(16)}-01` },
      });
      await client.cancelJob(later.id);
      expect(await client.replay({ jobIds: [later.id], includeCancelled: true })).toMatchObject({ replayed: 1 });
    } finally {
      client.close();
    }
    worker.proc.kill("SIGTERM");
    expect(await within(worker.exited, 10_000, "the worker to exit")).toBe(0);
    broker.proc.kill("SIGTERM");
    await within(broker.exited, 15_000, "the broker to exit");

    const inTrace = () => receiver.spans.filter((s) => s.traceId === traceId);
    const consumers = await eventually(() => {
      const c = inTrace().filter((s) => s.kind === KIND_CONSUMER && s.attributes["messaging.message.id"] === jobId);
      return c.length >= 2 ? c : undefined;
    }, 10_000, "the worker's consumer spans");

    const spans = inTrace();
    if (process.env.JOBWIRE_TEST_LOG) {
      for (const s of spans) console.log(`${s.service} ${s.name} kind=${s.kind} span=${s.spanId} parent=${s.parentSpanId} ${JSON.stringify(s.attributes)}`);
    }
    const root = spans.find((s) => s.service === "trace-producer" && s.name === "signup");
    const prod = spans.find((s) => s.service === "trace-producer" && s.kind === KIND_PRODUCER);
    expect(root, "the producer's root span").toBeDefined();
    expect(prod, "the PRODUCER span").toBeDefined();
    expect(prod!.parentSpanId).toBe(root!.spanId);
    expect(prod!.attributes).toMatchObject({ "messaging.system": "jobwire", "messaging.destination.name": queue, "messaging.message.id": jobId });

    // Exactly one CONSUMER span per attempt, each a child of the PRODUCER span.
    consumers.sort((a, b) => Number(a.attributes["jobwire.job.attempt"]) - Number(b.attributes["jobwire.job.attempt"]));
    expect(consumers.map((c) => c.service)).toEqual(["trace-worker", "trace-worker"]);
    expect(consumers.map((c) => c.attributes["jobwire.job.attempt"])).toEqual([1, 2]);
    expect(consumers.map((c) => c.attributes["jobwire.job.outcome"])).toEqual(["retry", "completed"]);
    for (const c of consumers) expect(c.parentSpanId).toBe(prod!.spanId);
    expect(consumers[0]!.status.code).toBe(STATUS_ERROR);
    expect(consumers[0]!.events.map((e) => e.name)).toContain("exception");

    // The handler's own span nests under its attempt.
    const sends = spans.filter((s) => s.name === "send email");
    expect(sends.map((s) => s.parentSpanId).sort()).toEqual(consumers.map((c) => c.spanId).sort());

    // The broker's spans for this job join the job's trace, parented to a
    // span of the producer's: the client sends traceparent in the RPC's
    // metadata as well as in the job's headers.
    const brokerInTrace = spans.filter((s) => s.service === "jobwire-broker");
    expect(brokerInTrace.length, "broker spans in the job's trace").toBeGreaterThan(0);
    const rpc = (method: string) => brokerInTrace.filter((s) => s.kind === KIND_SERVER && s.attributes["rpc.method"] === method);
    // The Enqueue RPC ran inside the PRODUCER span.
    expect(rpc("Enqueue").map((s) => s.parentSpanId)).toEqual([prod!.spanId]);
    // The broker marks each delivery in the job's trace, under the producer's span.
    const deliveries = brokerInTrace.filter((s) => s.attributes["messaging.message.id"] === jobId && s.kind !== KIND_SERVER);
    expect(deliveries.map((s) => s.attributes["jobwire.job.attempt"]).sort()).toEqual([1, 2]);
    for (const d of deliveries) expect(d.parentSpanId).toBe(prod!.spanId);
    // The failed attempt's Nack was sent from inside its CONSUMER span, and links to the job's trace too.
    const nacks = rpc("Nack");
    expect(nacks.map((s) => s.parentSpanId)).toEqual([consumers[0]!.spanId]);
    expect(nacks[0]!.links.map((l) => l.traceId)).toEqual([traceId]);

    // The ack is batched by the worker, outside any one job's span, and
    // sent on its Lease stream: its span links to the job's trace.
    const brokerSpans = receiver.spans.filter((s) => s.service === "jobwire-broker");
    const acks = brokerSpans.filter((s) => s.kind === KIND_SERVER && s.name === "jobwire.v1.WorkerService/Lease ack");
    expect(acks.some((s) => s.links.some((l) => l.traceId === traceId)), "an ack span linked to the job's trace").toBe(true);
    // The Replay links to the replayed job's trace, and marks the replay in it.
    const replays = brokerSpans.filter((s) => s.kind === KIND_SERVER && s.attributes["rpc.method"] === "Replay");
    expect(replays.map((s) => s.links.map((l) => l.traceId))).toEqual([[replayTrace]]);
    expect(brokerSpans.filter((s) => s.traceId === replayTrace && s.name.startsWith("replay ")).length).toBe(1);
  });
});
