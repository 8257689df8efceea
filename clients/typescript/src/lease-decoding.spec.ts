import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { JobSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { LeaseResponseSchema, LeasedJobSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { describe, expect, it } from "vitest";
import { DECODED_JOB_FIELDS, LAZY_INFO_MAX_BYTES, decodeLease, decodeLeasedJob, fullJob, rawLeaseMethod } from "./lease-decoding.js";

const ts = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms - Math.floor(ms / 1000) * 1000) * 1e6 });

const cases: [string, MessageInitShape<typeof JobSchema>][] = [
  ["an empty job", {}],
  ["a plain job", { id: "1", queue: "emails", type: "send", payload: new TextEncoder().encode('{"a":1}'), contentType: "application/json", state: 3, attempt: 1, maxAttempts: 25, runAt: ts(1_795_491_000_123), createdAt: ts(1_795_490_999_000), leaseExpiresAt: ts(1_795_491_030_456), workerId: "w" }],
  ["every field", {
    id: "9223372036854775807", queue: "q", type: "τύπος", payload: new Uint8Array(300).fill(9), contentType: "application/octet-stream",
    state: 6, priority: 7, attempt: 3, maxAttempts: 1_000_000, runAt: ts(0), createdAt: ts(-1500), finishedAt: ts(1000),
    headers: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x-ünï": "✓" },
    idempotencyKey: "k", errors: [{ attempt: 1, message: "boom", at: ts(5), workerId: "w1" }, { attempt: 2, message: "x".repeat(200) }],
    leaseExpiresAt: ts(99_999), cancelRequested: true, leaseDuration: { seconds: 30n, nanos: 500_000_000 }, workerId: "w2",
  }],
  ["a negative priority", { priority: -5 }],
  ["the smallest priority", { priority: -2147483648 }],
  ["a payload of 256 KiB", { payload: new Uint8Array(256 * 1024).map((_, i) => i % 253) }],
];

describe("hand-written LeasedJob decoding", () => {
  it.each(cases)("reads %s exactly as protobuf-es does", (_name, init) => {
    const bytes = toBinary(LeasedJobSchema, create(LeasedJobSchema, { job: init, leaseToken: "1.tok", leaseExpiresAt: ts(42) }));
    expect(decodeLeasedJob(bytes)).toEqual(fromBinary(LeasedJobSchema, bytes));
  });

  it("replaces malformed UTF-8 in strings as TextDecoder does (protobuf-es would throw)", () => {
    // Job.type (field 3) holding a lone continuation byte, a truncated
    // 3-byte sequence, an overlong encoding, a surrogate and a cut 4-byte one.
    const bad = [0x61, 0x80, 0x62, 0xe2, 0x82, 0x63, 0xc0, 0xaf, 0xed, 0xa0, 0x80, 0x64, 0xf0, 0x9f, 0x98];
    const job = [0x1a, bad.length, ...bad];
    const bytes = new Uint8Array([0x0a, job.length, ...job, 0x12, 0x01, 0x74]);
    const job2 = decodeLeasedJob(bytes).job!;
    expect(job2.type).toBe(new TextDecoder().decode(new Uint8Array(bad)));
    expect(job2.type).toContain("\ufffd");
    expect(() => fromBinary(LeasedJobSchema, bytes)).toThrow(/utf-8/);
  });

  it("skips fields it does not know, as a newer broker may send", () => {
    const known = toBinary(LeasedJobSchema, create(LeasedJobSchema, { job: { id: "7" }, leaseToken: "t" }));
    // Field 99 (varint) and field 98 (length-delimited) appended to the LeasedJob.
    const extra = new Uint8Array([...known, 0x98, 0x06, 0x01, 0x92, 0x06, 0x02, 0x61, 0x62]);
    expect(decodeLeasedJob(extra)).toMatchObject({ leaseToken: "t", job: { id: "7" } });
  });

  it("reads a LeaseResponse through the raw method, one encoded job per element", () => {
    const bytes = toBinary(LeaseResponseSchema, create(LeaseResponseSchema, { jobs: [{ leaseToken: "a", job: { id: "1" } }, { leaseToken: "b" }] }));
    const raw = fromBinary(rawLeaseMethod.output, bytes) as unknown as { jobs: Uint8Array[] };
    expect(raw.jobs.map((b) => decodeLeasedJob(b).leaseToken)).toEqual(["a", "b"]);
    expect(rawLeaseMethod.parent.typeName).toBe("jobwire.v1.WorkerService");
    expect(rawLeaseMethod.name).toBe("Lease");
  });

  it("knows every field of jobwire.v1.Job", () => {
    expect(JobSchema.fields.map((f) => f.number).sort((a, b) => a - b)).toEqual(DECODED_JOB_FIELDS);
  });
});

const msOf = (t: { seconds: bigint; nanos: number } | undefined) => (t === undefined ? undefined : Number(t.seconds) * 1000 + t.nanos / 1e6);

describe("the worker's LeaseView", () => {
  it.each(cases)("of %s holds what decodeLeasedJob reads, and the whole job for job.info", (_name, init) => {
    const bytes = toBinary(LeasedJobSchema, create(LeasedJobSchema, { job: init, leaseToken: "1.tok", leaseExpiresAt: ts(42) }));
    const lj = decodeLeasedJob(bytes);
    const j = lj.job!;
    const v = decodeLease(bytes);
    expect(v).toMatchObject({
      hasJob: true, token: "1.tok", id: j.id, queue: j.queue, type: j.type, payload: j.payload, contentType: j.contentType,
      priority: j.priority, attempt: j.attempt, maxAttempts: j.maxAttempts, headers: j.headers,
      cancelRequested: j.cancelRequested,
    });
    expect(v.createdAtMs).toBe(msOf(j.createdAt));
    expect(v.leaseDurationMs).toBe(msOf(j.leaseDuration));
    expect(v.leaseExpiresAtMs).toBe(42);
    expect(fullJob(v)).toEqual(j);
    // Large jobs are decoded whole at once rather than pinning the batch.
    expect(v.bytes === undefined).toBe(bytes.length > LAZY_INFO_MAX_BYTES);
  });

  it("reuses repeated strings only while the bytes match", () => {
    const enc = (queue: string, type: string) =>
      toBinary(LeasedJobSchema, create(LeasedJobSchema, { job: { queue, type, contentType: "application/json" }, leaseToken: "t" }));
    const seq = [["emails", "send"], ["emails", "send"], ["emailz", "send"], ["e", "sent"], ["emails", "send"], ["ключ", "✓"], ["ключ", "✓"]];
    for (const [queue, type] of seq) expect(decodeLease(enc(queue!, type!))).toMatchObject({ queue, type, contentType: "application/json" });
  });

  it("marks a LeasedJob without a job", () => {
    expect(decodeLease(toBinary(LeasedJobSchema, create(LeasedJobSchema, { leaseToken: "t" })))).toMatchObject({ hasJob: false, token: "t" });
  });
});
