import http2 from "node:http2";
import { create, toBinary, type DescMessage, type DescMethod, type DescService, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { JobwireClient } from "@jobwire/client";
import { JobServiceCodecs } from "@jobwire/proto/fast/jobwire/v1/job_service_fast";
import { leanUnaryHandler } from "@jobwire/proto/grpc";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { EnqueueRequestSchema, EnqueueResponseSchema, JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { startTestBroker, type TestBroker } from "@jobwire/server/testing";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, expectCode, json, uniqueQueue } from "./helpers.js";

/**
 * Plain unary gRPC calls are served by the broker and sent by the
 * TypeScript client on the lean path (@jobwire/proto/grpc, shared by both),
 * with the generated codecs; everything else goes through connect-es. These
 * tests hold both ends to gRPC's rules over a real HTTP/2 connection:
 * deadlines, cancellation, size limits, malformed frames, the fall-through
 * for compressed requests, and answers (results, codes, messages, details)
 * that match connect-es's for every unary RPC.
 */
// The smallest limit the broker accepts beside a 32 KiB payload (config.ts, JOB_OVERHEAD_BYTES).
const MAX_MESSAGE = 32 * 1024 + 160 * 1024;
let tb: TestBroker;
beforeAll(async () => {
  tb = await startTestBroker({ maxMessageBytes: MAX_MESSAGE, maxPayloadBytes: 32 * 1024 });
});
afterAll(async () => {
  await tb.stop();
});

/** One raw HTTP/2 gRPC call; returns the response headers, trailers and body. */
async function rawCall(path: string, headers: http2.OutgoingHttpHeaders, body: Buffer) {
  const session = http2.connect(tb.url);
  try {
    return await new Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
      const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
      let h: http2.IncomingHttpHeaders = {};
      let t: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      req.on("response", (x) => (h = x));
      req.on("trailers", (x) => (t = x));
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("error", reject);
      req.on("close", () => resolve({ headers: h, trailers: t, body: Buffer.concat(chunks) }));
      req.end(body);
    });
  } finally {
    session.close();
  }
}

function framed(msg: Uint8Array, flag = 0): Buffer {
  const b = Buffer.alloc(5 + msg.length);
  b[0] = flag;
  b.writeUInt32BE(msg.length, 1);
  b.set(msg, 5);
  return b;
}

const ENQUEUE = "/jobwire.v1.JobService/Enqueue";
const enqueueBytes = (queue: string) => toBinary(EnqueueRequestSchema, create(EnqueueRequestSchema, { jobs: [{ queue, type: "t" }] }));

/** Holds an exclusive lock on the jobs table, so every Enqueue blocks until release(). */
async function lockJobs(db: pg.Pool): Promise<() => Promise<void>> {
  const c = await db.connect();
  await c.query("BEGIN");
  await c.query("LOCK TABLE jobwire.jobs IN ACCESS EXCLUSIVE MODE");
  return async () => {
    await c.query("ROLLBACK");
    c.release();
  };
}

it("answers a well-formed call with one message and grpc-status 0 in the trailers", async () => {
  const queue = uniqueQueue();
  const r = await rawCall(ENQUEUE, {}, framed(enqueueBytes(queue)));
  expect(r.headers[":status"]).toBe(200);
  expect(r.headers["content-type"]).toBe("application/grpc+proto");
  expect(r.trailers["grpc-status"]).toBe("0");
  expect(r.body.readUInt32BE(1)).toBe(r.body.length - 5);
  const { rows } = await tb.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1", [queue]);
  expect(rows[0].n).toBe(1);
});

it("refuses malformed frames with INVALID_ARGUMENT in a trailers-only response", async () => {
  const msg = enqueueBytes(uniqueQueue());
  const cases: [string, Buffer, http2.OutgoingHttpHeaders][] = [
    ["no message", Buffer.from([0, 0]), {}],
    ["two messages", Buffer.concat([framed(msg), framed(msg)]), {}],
    ["compressed flag without grpc-encoding", framed(msg, 1), {}],
    ["bad grpc-timeout", framed(msg), { "grpc-timeout": "soon" }],
    ["undecodable message", framed(Buffer.from([0xff, 0xff, 0xff])), {}],
  ];
  for (const [name, body, headers] of cases) {
    const r = await rawCall(ENQUEUE, headers, body);
    expect(r.headers["grpc-status"], name).toBe(String(Code.InvalidArgument));
    expect(decodeURIComponent(String(r.headers["grpc-message"])), name).not.toBe("");
    expect(r.body.length, name).toBe(0);
  }
});

it("refuses a request larger than the message limit with RESOURCE_EXHAUSTED", async () => {
  const big = Buffer.alloc(MAX_MESSAGE + 100, 1);
  const r = await rawCall(ENQUEUE, {}, framed(big));
  expect(r.headers["grpc-status"]).toBe(String(Code.ResourceExhausted));
  // So is a frame header that promises more than the limit.
  const header = Buffer.alloc(5);
  header.writeUInt32BE(MAX_MESSAGE + 1, 1);
  const r2 = await rawCall(ENQUEUE, {}, header);
  expect(r2.headers["grpc-status"]).toBe(String(Code.ResourceExhausted));
});

it("enforces the caller's deadline on both ends, and keeps serving", async () => {
  const queue = uniqueQueue();
  const client = new JobwireClient({ address: tb.url, retry: { maxAttempts: 1 } });
  const release = await lockJobs(tb.db);
  try {
    // The client's timer and the broker's (grpc-timeout) race; either way the answer is DEADLINE_EXCEEDED.
    await expectCode(client.enqueue("t", {}, { queue, timeoutMs: 200 }), Code.DeadlineExceeded);
    const raw = await rawCall(ENQUEUE, { "grpc-timeout": "150m" }, framed(enqueueBytes(queue)));
    expect(raw.headers["grpc-status"]).toBe(String(Code.DeadlineExceeded));
  } finally {
    await release();
  }
  expect((await client.enqueue("t", {}, { queue })).id).not.toBe("");
  client.close();
});

it("takes deadlines beyond a timer's range as no deadline, on both ends", async () => {
  const queue = uniqueQueue();
  // 99999999H is the largest grpc-timeout there is; setTimeout would fire it at once.
  const raw = await rawCall(ENQUEUE, { "grpc-timeout": "99999999H" }, framed(enqueueBytes(queue)));
  expect(raw.trailers["grpc-status"]).toBe("0");
  const client = new JobwireClient({ address: tb.url, retry: { maxAttempts: 1 } });
  expect((await client.enqueue("t", {}, { queue, timeoutMs: 40 * 24 * 3600 * 1000 })).id).not.toBe("");
  client.close();
});

it("cancels a call whose AbortSignal fires", async () => {
  const client = new JobwireClient({ address: tb.url, retry: { maxAttempts: 1 } });
  const release = await lockJobs(tb.db);
  try {
    const ac = new AbortController();
    const p = client.enqueue("t", {}, { queue: uniqueQueue(), signal: ac.signal });
    setImmediate(() => ac.abort());
    await expectCode(p, Code.Canceled);
  } finally {
    await release();
  }
  client.close();
});

it("carries status, message and metadata of errors to the lean client", async () => {
  const client = new JobwireClient({ address: tb.url, retry: { maxAttempts: 1 } });
  // The message holds characters that grpc-message must percent-encode.
  const err = await expectCode(client.enqueue("t", {}, { queue: "bad queue/ü%" }), Code.InvalidArgument, "queue");
  expect(err.rawMessage).toContain("bad queue/ü%");
  await expectCode(client.getJob("999999999"), Code.NotFound);
  client.close();
});

it("leaves compressed requests to connect-es, which accepts them", async () => {
  const queue = uniqueQueue();
  const gz = createClient(JobService, createGrpcTransport({ baseUrl: tb.url, sendCompression: compressionGzip, compressMinBytes: 0 }));
  const res = await gz.enqueue({ jobs: [{ queue, type: "t" }] });
  expect(res.results).toHaveLength(1);
});

it("fails over to UNAVAILABLE when nothing listens", async () => {
  const client = new JobwireClient({ address: "http://127.0.0.1:1", retry: { maxAttempts: 1 } });
  await expectCode(client.enqueue("t", {}, { queue: uniqueQueue() }), Code.Unavailable);
  client.close();
});

// ---- the lean path against connect-es --------------------------------------

/** Calls a unary method by its local name on a generated client. */
function callOn(client: object, method: DescMethod, req: object): Promise<Message> {
  const fn = (client as Record<string, (r: object) => Promise<Message>>)[method.localName];
  if (fn === undefined) throw new Error(`no ${method.localName} on the client`);
  return fn.call(client, req);
}

type Outcome = { ok: true; message: unknown } | { ok: false; code: string; message: string; details: unknown; metadata: Record<string, string> };

/** Headers that belong to the protocol, not to the error: they may differ between paths. */
const PROTOCOL_HEADERS = new Set(["content-type", "date", "grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-encoding", "grpc-accept-encoding", "accept-encoding", "content-length", "trailer"]);

/**
 * What a caller sees of a call, with times masked: answers made a moment
 * apart differ in their "now" (a queue's oldest age, a config's
 * updated_at), not in how they travelled. The codecs' own specs prove
 * that times are carried exactly.
 */
async function outcome(p: Promise<Message>, desc: DescMessage): Promise<Outcome> {
  try {
    return { ok: true, message: masked(desc, await p) };
  } catch (err) {
    const e = ConnectError.from(err);
    const metadata: Record<string, string> = {};
    e.metadata.forEach((v, k) => {
      if (!PROTOCOL_HEADERS.has(k)) metadata[k] = v;
    });
    const details = e.details.map((d) => ("desc" in d ? { type: d.desc.typeName } : { type: d.type, value: Buffer.from(d.value).toString("hex") }));
    return { ok: false, code: Code[e.code], message: e.rawMessage, details, metadata };
  }
}

function masked(desc: DescMessage, m: Message): unknown {
  const out: Record<string, unknown> = {};
  const value = (sub: DescMessage | undefined, v: unknown): unknown => {
    if (sub === undefined || v === undefined) return v;
    if (sub.typeName === "google.protobuf.Timestamp" || sub.typeName === "google.protobuf.Duration") return "<time>";
    return masked(sub, v as Message);
  };
  for (const f of desc.fields) {
    const v = (f.oneof ? (m as unknown as Record<string, { case?: string; value?: unknown }>)[f.oneof.localName] : undefined) ?? undefined;
    if (f.oneof) {
      if (v?.case === f.localName) out[f.localName] = value(f.message, v.value);
      continue;
    }
    const raw = (m as unknown as Record<string, unknown>)[f.localName];
    if (f.fieldKind === "list") out[f.localName] = (raw as unknown[]).map((x) => value(f.message, x));
    else if (f.fieldKind === "map") out[f.localName] = Object.fromEntries(Object.entries(raw as object).map(([k, x]) => [k, value(f.message, x)]));
    else out[f.localName] = value(f.message, raw);
  }
  return out;
}

describe("every unary RPC, through the lean path and through connect-es", () => {
  let lean: JobwireClient;
  let viaConnect: Record<string, object>;
  let viaLean: Record<string, object>;
  const queue = uniqueQueue("parity");
  let jobId = "";
  let cancelledId = "";

  beforeAll(async () => {
    lean = new JobwireClient({ address: tb.url, retry: { maxAttempts: 1 } });
    // Compressed requests are the ones the broker leaves to connect-es.
    const gz = createGrpcTransport({ baseUrl: tb.url, sendCompression: compressionGzip, compressMinBytes: 0 });
    viaConnect = {
      [JobService.typeName]: createClient(JobService, gz),
      [WorkerService.typeName]: createClient(WorkerService, gz),
      [AdminService.typeName]: createClient(AdminService, gz),
    };
    viaLean = { [JobService.typeName]: lean.jobs, [WorkerService.typeName]: lean.workers, [AdminService.typeName]: lean.admin };
    jobId = (await enqueue(tb, { queue, payload: json({ a: 1 }), headers: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" } }))[0]!;
    cancelledId = (await enqueue(tb, { queue }))[0]!;
    await tb.jobs.cancelJob({ id: cancelledId });
  });
  afterAll(() => lean.close());

  const staleToken = "1.0b6c4b1e-8a0e-4a8b-9c41-3b2f7e5a9d10";
  /** Requests per RPC, valid and not; each must answer the same, whichever path it takes. */
  const requests = (): Record<string, Record<string, object[]>> => ({
    [JobService.typeName]: {
      enqueue: [
        { jobs: [{ queue, type: "t", idempotencyKey: "parity-1", payload: json({ b: "ü" }), headers: { k: "v" }, priority: -3, maxAttempts: 4 }] },
        { jobs: [] },
        { jobs: [{ queue: "bad queue/ü%", type: "t" }] },
      ],
      getJob: [{ id: jobId }, { id: "999999999" }, { id: "not-a-number" }],
      cancelJob: [{ id: cancelledId }, { id: "999999999" }],
    },
    [WorkerService.typeName]: {
      ack: [{ leaseTokens: [staleToken] }, { leaseTokens: ["garbage"] }, { leaseTokens: [] }],
      nack: [{ leaseToken: staleToken, error: "boom" }, { leaseToken: "" }],
      heartbeat: [{ leaseTokens: [staleToken] }, { leaseTokens: [] }],
    },
    [AdminService.typeName]: {
      replay: [{ jobIds: [jobId], dryRun: true }, {}, { filter: { queue }, dryRun: true }],
      listJobs: [{ queue }, { queue, pageSize: 1 }],
      getQueueStats: [{ queues: [queue] }, {}],
      setQueueConfig: [{ queue, maxAttempts: 7 }, { queue: "" }],
      getQueueConfig: [{ queue }, { queue: "" }],
      pauseQueue: [{ queue: `${queue}-paused` }, { queue: "" }],
      resumeQueue: [{ queue: `${queue}-paused` }, { queue: "" }],
      listWorkers: [{}, { queue }],
      getQueueHistory: [{ queue }],
      whoAmI: [{}],
      setSchedule: [{ schedule: { name: "parity", cron: "0 0 1 1 *", job: { queue, type: "t" } } }, { schedule: { name: "parity-bad", cron: "not a cron" } }, {}],
      deleteSchedule: [{ name: "no-such-schedule" }],
      listSchedules: [{}],
    },
  });

  it("has requests for every unary RPC of the three services", () => {
    const table = requests();
    for (const service of [JobService, WorkerService, AdminService]) {
      for (const method of service.methods) {
        if (method.methodKind === "unary") expect(table[service.typeName]?.[method.localName], `${service.typeName}.${method.name}`).toBeDefined();
      }
    }
  });

  for (const service of [JobService, WorkerService, AdminService] as DescService[]) {
    for (const method of service.methods) {
      if (method.methodKind !== "unary") continue;
      it(`${service.typeName}.${method.name} answers alike`, async () => {
        for (const req of requests()[service.typeName]?.[method.localName] ?? []) {
          // Once first, so that calls that change something (an idempotent enqueue, a pause) have settled.
          await outcome(callOn(viaLean[service.typeName]!, method, req), method.output);
          const reference = await outcome(callOn(viaConnect[service.typeName]!, method, req), method.output);
          const fast = await outcome(callOn(viaLean[service.typeName]!, method, req), method.output);
          expect(fast, JSON.stringify(req, (_k, v) => (typeof v === "bigint" ? String(v) : v))).toEqual(reference);
        }
      });
    }
  }
});

/**
 * Errors with details and metadata, which the broker does not send today:
 * a stub JobService on both server paths, read by both client paths, in
 * every pairing, must give the caller the same ConnectError.
 */
describe("error details and metadata, on every pairing of lean and connect-es ends", () => {
  const failure = () =>
    new ConnectError("no: ü% / \u00e9", Code.FailedPrecondition, { "x-jobwire-reason": "stub" }, [
      { desc: JobSpecSchema, value: { queue: "q", type: "t", priority: -1 } },
      { desc: EnqueueResponseSchema, value: { results: [{ jobId: "1", duplicate: true }] } },
    ]);
  const stub = {
    enqueue: () => {
      throw failure();
    },
    getJob: () => ({ job: { id: "7", queue: "q" } }),
    cancelJob: () => {
      throw new ConnectError("plain", Code.NotFound);
    },
  };
  let servers: { url: string; close: () => Promise<void> }[] = [];

  /** An h2c server: the lean handler in front of connect-es, or connect-es alone. */
  async function serve(withLean: boolean): Promise<{ url: string; close: () => Promise<void> }> {
    const handler = connectNodeAdapter({ routes: (r) => r.service(JobService, stub as never), grpc: true });
    const unary = leanUnaryHandler([{ service: JobService, impl: stub, codecs: JobServiceCodecs }], {
      interceptors: [],
      maxMessageBytes: 1 << 20,
      toError: (err) => ConnectError.from(err),
    });
    const server = http2.createServer((req, res) => {
      if (!(withLean && unary(req, res))) handler(req, res);
    });
    const sessions = new Set<http2.ServerHttp2Session>();
    server.on("session", (s) => sessions.add(s));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as { port: number };
    const close = () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sessions) s.destroy();
      return closed;
    };
    return { url: `http://127.0.0.1:${port}`, close };
  }

  beforeAll(async () => {
    servers = [await serve(true), await serve(false)];
  });
  afterAll(async () => {
    for (const s of servers) await s.close();
  });

  it("carries code, message, details and metadata as connect-es does", async () => {
    const [leanServer, connectServer] = [servers[0]!, servers[1]!];
    const leanClients = [leanServer, connectServer].map((s) => new JobwireClient({ address: s.url, retry: { maxAttempts: 1 } }));
    const clients = [
      // lean client -> lean server, lean client -> connect-es server
      ...leanClients.map((c) => c.jobs),
      // connect-es client -> lean server, connect-es client -> connect-es server
      ...[leanServer, connectServer].map((s) => createClient(JobService, createGrpcTransport({ baseUrl: s.url }))),
    ];
    for (const method of JobService.methods) {
      const results = [];
      for (const c of clients) results.push(await outcome(callOn(c, method, { id: "7", jobs: [] }), method.output));
      for (const r of results.slice(1)) expect(r, method.name).toEqual(results[0]);
    }
    const first = await outcome(callOn(clients[0]!, JobService.method.enqueue, {}), EnqueueResponseSchema);
    for (const c of leanClients) c.close();
    expect(first).toMatchObject({ ok: false, code: "FailedPrecondition", message: "no: ü% / \u00e9", metadata: { "x-jobwire-reason": "stub" } });
    expect((first as { details: unknown[] }).details).toHaveLength(2);
  });
});
