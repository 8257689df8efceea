import http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport } from "@connectrpc/connect-node";
import { JobwireClient } from "@jobwire/client";
import { EnqueueRequestSchema, JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { startTestBroker, type TestBroker } from "@jobwire/server/testing";
import type pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";
import { expectCode, uniqueQueue } from "./helpers.js";

/**
 * Plain unary gRPC calls are served by the broker's lean handler
 * (transport/grpc-unary.ts) and sent by the TypeScript client's lean
 * transport (clients/typescript/src/grpc-unary.ts); everything else goes
 * through connect-es. These tests hold both ends to gRPC's rules over a
 * real HTTP/2 connection: deadlines, cancellation, size limits, malformed
 * frames, and the fall-through for compressed requests.
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
