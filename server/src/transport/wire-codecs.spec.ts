import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { EnqueueRequestSchema, EnqueueResponseSchema } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { describe, expect, it } from "vitest";
import { AckRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { DECODED_JOB_SPEC_FIELDS, decodeAckRequest, decodeEnqueueRequest, encodeEnqueueResponse } from "./wire-codecs.js";

type Spec = MessageInitShape<typeof JobSpecSchema>;

const specs: [string, Spec][] = [
  ["empty", {}],
  ["minimal", { queue: "emails", type: "send", payload: new TextEncoder().encode('{"user_id":42}') }],
  [
    "every field",
    {
      queue: "q.1:x-y",
      type: "t",
      payload: new Uint8Array([0, 1, 2, 254, 255]),
      contentType: "application/octet-stream",
      schedule: { case: "runAt", value: { seconds: 1_795_000_000n, nanos: 123_000_000 } },
      priority: -7,
      maxAttempts: 3,
      leaseDuration: { seconds: 90n, nanos: 5 },
      retry: { initialBackoff: { seconds: 1n }, maxBackoff: { seconds: 60n }, multiplier: 1.5, jitter: 0 },
      idempotencyKey: "order-17 ✓",
      idempotencyTtl: { seconds: 3600n },
      headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "": "", "ключ": "значение" },
    },
  ],
  ["delay", { queue: "q", type: "t", schedule: { case: "delay", value: { seconds: 0n, nanos: 1_000_000 } } }],
  ["max_attempts zero is present", { queue: "q", type: "t", maxAttempts: 0 }],
  ["negative timestamp", { schedule: { case: "runAt", value: { seconds: -62_135_596_800n, nanos: 0 } } }],
  ["retry with only a jitter", { retry: { jitter: 0.25 } }],
  ["large payload", { payload: new Uint8Array(20_000).fill(7) }],
];

describe("decodeEnqueueRequest", () => {
  it("knows every field of JobSpec", () => {
    expect(JobSpecSchema.fields.map((f) => f.number).sort((a, b) => a - b)).toEqual(DECODED_JOB_SPEC_FIELDS);
  });

  for (const [name, spec] of specs) {
    it(`reads "${name}" as fromBinary does`, () => {
      const bytes = toBinary(EnqueueRequestSchema, create(EnqueueRequestSchema, { jobs: [spec, spec] }));
      expect(decodeEnqueueRequest(bytes)).toEqual(fromBinary(EnqueueRequestSchema, bytes));
    });
  }

  it("reads a batch of 1000 as fromBinary does", () => {
    const small = specs.filter(([name]) => name !== "large payload");
    const jobs = Array.from({ length: 1000 }, (_, i) => small[i % small.length]![1]);
    const bytes = toBinary(EnqueueRequestSchema, create(EnqueueRequestSchema, { jobs }));
    expect(decodeEnqueueRequest(bytes)).toEqual(fromBinary(EnqueueRequestSchema, bytes));
  });

  it("skips fields it does not know, at any depth", () => {
    const inner = toBinary(JobSpecSchema, create(JobSpecSchema, { queue: "q", type: "t", priority: 2 }));
    const w = new BinaryWriter();
    w.tag(1, WireType.LengthDelimited).fork();
    w.raw(inner);
    w.tag(99, WireType.Varint).uint64(123n);
    w.tag(100, WireType.LengthDelimited).string("from a newer client");
    w.tag(101, WireType.Bit32).fixed32(7);
    w.join();
    w.tag(50, WireType.Bit64).double(1.5);
    const bytes = w.finish();
    // The broker has no use for unknown fields, so they are dropped, not kept in $unknown.
    expect(decodeEnqueueRequest(bytes)).toEqual(fromBinary(EnqueueRequestSchema, bytes, { readUnknownFields: false }));
    expect(decodeEnqueueRequest(bytes).jobs[0]).toMatchObject({ queue: "q", type: "t", priority: 2 });
  });

  it("refuses truncated input", () => {
    const bytes = toBinary(EnqueueRequestSchema, create(EnqueueRequestSchema, { jobs: [specs[2]![1]] }));
    expect(() => decodeEnqueueRequest(bytes.subarray(0, bytes.length - 3))).toThrow();
  });
});

describe("encodeEnqueueResponse", () => {
  const cases: [string, { jobId: string; duplicate: boolean }[]][] = [
    ["none", []],
    ["one", [{ jobId: "1", duplicate: false }]],
    ["duplicates and long ids", [{ jobId: "9223372036854775807", duplicate: true }, { jobId: "42", duplicate: false }]],
    ["an empty id", [{ jobId: "", duplicate: true }]],
    ["a thousand", Array.from({ length: 1000 }, (_, i) => ({ jobId: String(1_000_000 + i), duplicate: i % 7 === 0 }))],
    ["not digits (falls back to reflection)", [{ jobId: "ü-1", duplicate: false }]],
  ];
  for (const [name, results] of cases) {
    it(`writes "${name}" byte for byte as toBinary does`, () => {
      const res = create(EnqueueResponseSchema, { results });
      expect(Buffer.from(encodeEnqueueResponse(res)).equals(Buffer.from(toBinary(EnqueueResponseSchema, res)))).toBe(true);
    });
  }
});

describe("decodeAckRequest", () => {
  it("reads lease tokens as fromBinary does", () => {
    for (const leaseTokens of [[], ["1.0b6c4b1e-8a0e-4a8b-9c41-3b2f7e5a9d10"], Array.from({ length: 300 }, (_, i) => `${i}.t`), ["", "ü"]]) {
      const bytes = toBinary(AckRequestSchema, create(AckRequestSchema, { leaseTokens }));
      expect(decodeAckRequest(bytes)).toEqual(fromBinary(AckRequestSchema, bytes));
    }
  });
});
