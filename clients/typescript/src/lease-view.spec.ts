import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { JobSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { LeasedJobSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { describe, expect, it } from "vitest";
import { timestampToMs, durationToMs } from "./convert.js";
import { decodeFullJob, decodeLeaseView } from "./lease-view.js";

/**
 * The generated view codec is proved against protobuf-es in
 * proto/fast/jobwire/view/v1/lease_fast.spec.ts; this checks what the
 * worker adds: payloads copied out of the batch, the whole Job on demand.
 */

const ts = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms - Math.floor(ms / 1000) * 1000) * 1e6 });

const cases: [string, MessageInitShape<typeof JobSchema>][] = [
  ["an empty job", {}],
  ["a plain job", { id: "1", queue: "emails", type: "send", payload: new TextEncoder().encode('{"a":1}'), contentType: "application/json", state: 3, attempt: 1, maxAttempts: 25, runAt: ts(1_795_491_000_123), createdAt: ts(1_795_490_999_000), leaseExpiresAt: ts(1_795_491_030_456), workerId: "w" }],
  ["every field", {
    id: "9223372036854775807", queue: "q", type: "τύπος", payload: new Uint8Array(300).fill(9), contentType: "application/octet-stream",
    state: 6, priority: -7, attempt: 3, maxAttempts: 1_000_000, runAt: ts(0), createdAt: ts(-1500), finishedAt: ts(1000),
    headers: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x-ünï": "✓" },
    idempotencyKey: "k", errors: [{ attempt: 1, message: "boom", at: ts(5), workerId: "w1" }],
    leaseExpiresAt: ts(99_999), cancelRequested: true, leaseDuration: { seconds: 30n, nanos: 500_000_000 }, workerId: "w2",
    concurrencyKey: "tenant:1", orderingKey: "o", errorsDropped: 4,
  }],
  ["a payload of 256 KiB", { payload: new Uint8Array(256 * 1024).map((_, i) => i % 253) }],
];

describe("the worker's view of a leased job", () => {
  it.each(cases)("of %s holds what protobuf-es reads, and the whole job on demand", (_name, init) => {
    const bytes = toBinary(LeasedJobSchema, create(LeasedJobSchema, { job: init, leaseToken: "1.tok", leaseExpiresAt: ts(42) }));
    const lj = fromBinary(LeasedJobSchema, bytes);
    const j = lj.job!;
    const v = decodeLeaseView(bytes);
    expect(v.leaseToken).toBe("1.tok");
    expect(v.leaseExpiresAtMs).toBe(42);
    expect(v.job).toMatchObject({
      id: j.id, queue: j.queue, type: j.type, contentType: j.contentType, priority: j.priority, attempt: j.attempt,
      maxAttempts: j.maxAttempts, headers: j.headers, cancelRequested: j.cancelRequested,
    });
    expect(v.job!.createdAtMs).toBe(timestampToMs(j.createdAt));
    expect(v.job!.leaseDurationMs).toBe(durationToMs(j.leaseDuration));
    expect(Buffer.from(v.job!.payload).equals(Buffer.from(j.payload))).toBe(true);
    expect(decodeFullJob(bytes, v.job!.payload)).toEqual(j);
  });

  it("copies the payload out of the batch: a plain Uint8Array with its own buffer", () => {
    const job = toBinary(LeasedJobSchema, create(LeasedJobSchema, { job: { id: "7", payload: new Uint8Array(100).fill(5) }, leaseToken: "t" }));
    const batch = new Uint8Array(job.length + 50);
    batch.set(job, 25);
    const v = decodeLeaseView(batch.subarray(25, 25 + job.length));
    expect(v.job!.payload).not.toBeInstanceOf(Buffer);
    expect(v.job!.payload.buffer.byteLength).toBe(100);
    // The whole job shares that copy rather than pointing into the batch.
    expect(decodeFullJob(batch.subarray(25, 25 + job.length), v.job!.payload)!.payload).toBe(v.job!.payload);
  });

  it("has no job when the LeasedJob has none", () => {
    expect(decodeLeaseView(toBinary(LeasedJobSchema, create(LeasedJobSchema, { leaseToken: "t" })))).toMatchObject({ job: undefined, leaseToken: "t" });
  });

  it("refuses malformed UTF-8, as protobuf-es does", () => {
    const bad = [0x61, 0x80, 0x62];
    const job = [0x1a, bad.length, ...bad]; // Job.type
    const bytes = new Uint8Array([0x0a, job.length, ...job, 0x12, 0x01, 0x74]);
    expect(() => fromBinary(LeasedJobSchema, bytes)).toThrow();
    expect(() => decodeLeaseView(bytes)).toThrow();
  });
});
