import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { EnqueueRequestSchema } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { describe, expect, it } from "vitest";
import { AckRequestSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { ENCODED_JOB_SPEC_FIELDS, encodeAckRequest, encodeEnqueueRequest } from "./wire-encoding.js";

type Spec = MessageInitShape<typeof JobSpecSchema>;

/** A small seeded generator (mulberry32), so every run checks the same jobs. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Jobs with every combination of fields present, absent, zero, negative, empty and non-ASCII. */
function randomSpecs(n: number, seed: number): Spec[] {
  const r = random(seed);
  const pick = <T,>(...xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const maybe = <T,>(v: () => T): T | undefined => (r() < 0.5 ? v() : undefined);
  const int = () => pick(0, 1, -1, 127, 128, 2 ** 31 - 1, -(2 ** 31), Math.floor(r() * 1e6));
  const seconds = () => ({ seconds: BigInt(pick(0, 1, -62_135_596_800, 1_795_000_000, Math.floor(r() * 1e10))), nanos: pick(0, 1, 999_999_999) });
  const text = () => pick("", "q", "emails.send:v2-x", "ключ ✓", "x".repeat(200));
  return Array.from({ length: n }, (): Spec => {
    const spec: Spec = {
      queue: text(),
      type: text(),
      payload: pick(new Uint8Array(0), new Uint8Array([0, 255]), new TextEncoder().encode('{"i":1}'), new Uint8Array(70_000).fill(3)),
      contentType: pick("", "application/json", "application/octet-stream"),
      priority: int(),
      maxAttempts: maybe(int),
      leaseDuration: maybe(seconds),
      idempotencyKey: text(),
      idempotencyTtl: maybe(seconds),
      headers: pick({}, { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }, { "": "", [text()]: text(), b: "2" }),
    };
    const when = pick(0, 1, 2);
    if (when === 1) spec.schedule = { case: "runAt", value: seconds() };
    if (when === 2) spec.schedule = { case: "delay", value: seconds() };
    if (r() < 0.5) {
      spec.retry = { initialBackoff: maybe(seconds), maxBackoff: maybe(seconds), multiplier: pick(0, 1.5, 2), jitter: maybe(() => pick(0, 0.25, 1)) };
    }
    return spec;
  });
}

describe("encodeEnqueueRequest", () => {
  it("knows every field of JobSpec", () => {
    expect(JobSpecSchema.fields.map((f) => f.number).sort((a, b) => a - b)).toEqual(ENCODED_JOB_SPEC_FIELDS);
  });

  for (const seed of [1, 2, 3, 4, 5]) {
    it(`writes 200 random jobs (seed ${seed}) byte for byte as toBinary does`, () => {
      const req = create(EnqueueRequestSchema, { jobs: randomSpecs(200, seed) });
      expect(Buffer.from(encodeEnqueueRequest(req)).equals(Buffer.from(toBinary(EnqueueRequestSchema, req)))).toBe(true);
    });
  }

  it("writes an empty request as toBinary does", () => {
    const req = create(EnqueueRequestSchema, {});
    expect(encodeEnqueueRequest(req)).toEqual(toBinary(EnqueueRequestSchema, req));
  });
});

describe("encodeAckRequest", () => {
  it("writes lease tokens byte for byte as toBinary does", () => {
    for (const leaseTokens of [[], ["1.0b6c4b1e-8a0e-4a8b-9c41-3b2f7e5a9d10"], Array.from({ length: 500 }, (_, i) => `${i}.${"x".repeat(i % 140)}`), ["", "ü"]]) {
      const req = create(AckRequestSchema, { leaseTokens });
      expect(Buffer.from(encodeAckRequest(req)).equals(Buffer.from(toBinary(AckRequestSchema, req)))).toBe(true);
    }
  });
});
