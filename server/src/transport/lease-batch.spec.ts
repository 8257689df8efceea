import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { LeaseResponseSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { describe, expect, it } from "vitest";
import type { Job, Lease } from "../model.js";
import { jobToPb, ts } from "./convert.js";
import { leaseResponse } from "./lease-batch.js";

/**
 * The generated codec itself is proved against protobuf-es in
 * proto/fast/jobwire/v1/worker_service_fast.spec.ts. This checks the
 * mapping from the broker's domain jobs: a batch must be the bytes that
 * the reflective path (jobToPb, as GetJob answers) would send.
 */

function job(over: Partial<Job> = {}): Job {
  return {
    id: "1",
    queue: "emails",
    type: "send_welcome_email",
    payload: new TextEncoder().encode('{"user_id":42}'),
    contentType: "application/json",
    state: "running",
    priority: 0,
    attempt: 1,
    maxAttempts: 25,
    runAt: new Date("2026-11-24T03:30:00.123Z"),
    createdAt: new Date("2026-11-24T03:29:59.000Z"),
    finishedAt: null,
    headers: {},
    idempotencyKey: null,
    errors: [],
    leaseExpiresAt: new Date("2026-11-24T03:30:30.456Z"),
    leaseMs: null,
    cancelRequested: false,
    workerId: "w-1",
    concurrencyKey: null,
    orderingKey: null,
    errorsDropped: 0,
    ...over,
  };
}

const lease = (j: Job): Lease => ({ job: j, token: `${j.id}.0b6c4b1e-8a0e-4a8b-9c41-3b2f7e5a9d10`, expiresAt: j.leaseExpiresAt ?? new Date(0) });

const cases: [string, Job][] = [
  ["a plain job", job()],
  [
    "every field set",
    job({
      id: "9223372036854775807",
      priority: 7,
      attempt: 3,
      maxAttempts: 1_000_000,
      finishedAt: new Date("2026-11-24T04:00:00.999Z"),
      headers: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate: "k=v", "x-ünïcödé": "✓ ✓", "": "" },
      idempotencyKey: "order-42",
      errors: [
        { attempt: 1, message: "smtp timeout", at: new Date("2026-11-24T03:20:00.001Z"), workerId: "w-1" },
        { attempt: 2, message: "x".repeat(300), at: new Date("2026-11-24T03:25:00Z"), workerId: "" },
      ],
      leaseMs: 30_500,
      cancelRequested: true,
      concurrencyKey: "tenant:42",
      orderingKey: "account:7",
      errorsDropped: 12,
    }),
  ],
  ["a negative priority", job({ priority: -5 })],
  ["an empty payload and defaults", job({ payload: new Uint8Array(), contentType: "", workerId: null, attempt: 0, maxAttempts: 1 })],
  ["a payload of 1 MiB", job({ payload: new Uint8Array(1024 * 1024).map((_, i) => i % 251) })],
  ["times before 1970 and on the second", job({ runAt: new Date(-1500), createdAt: new Date(0), leaseExpiresAt: new Date(1000) })],
  ["no lease expiry", job({ leaseExpiresAt: null, state: "dead" })],
  ["a sub-second lease", job({ leaseMs: 250 })],
];

function reference(leases: Lease[]): Uint8Array {
  return toBinary(
    LeaseResponseSchema,
    create(LeaseResponseSchema, { jobs: leases.map((l) => ({ job: jobToPb(l.job), leaseToken: l.token, leaseExpiresAt: ts(l.expiresAt) })) }),
  );
}

describe("lease batches", () => {
  it.each(cases)("carry %s as jobToPb and toBinary would", (_name, j) => {
    const leases = [lease(j)];
    expect(Buffer.from(toBinary(LeaseResponseSchema, leaseResponse(leases))).equals(Buffer.from(reference(leases)))).toBe(true);
  });

  it("carry a whole batch in one unknown field that decodes as the ordinary message", () => {
    const leases = cases.map(([, j]) => lease(j));
    const bytes = toBinary(LeaseResponseSchema, leaseResponse(leases));
    expect(Buffer.from(bytes).equals(Buffer.from(reference(leases)))).toBe(true);
    expect(leaseResponse(leases).$unknown).toHaveLength(1);
    const decoded = fromBinary(LeaseResponseSchema, bytes);
    expect(decoded.jobs.map((x) => x.job!.id)).toEqual(leases.map((l) => l.job.id));
    expect(decoded.jobs[1]!.job!.concurrencyKey).toBe("tenant:42");
  });

  it("are empty messages when there are no leases (keepalives)", () => {
    expect(toBinary(LeaseResponseSchema, leaseResponse([]))).toHaveLength(0);
  });
});
