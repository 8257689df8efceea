import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { LeaseResponseSchema, LeasedJobSchema } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { describe, expect, it } from "vitest";
import type { Job, Lease } from "../model.js";
import { jobToPb, ts } from "./convert.js";
import { encodeLeasedJob, leaseResponse } from "./lease-encoding.js";

/** The reference: the generated schema, by reflection. */
function slow(l: Lease): Uint8Array {
  return toBinary(LeasedJobSchema, create(LeasedJobSchema, { job: jobToPb(l.job), leaseToken: l.token, leaseExpiresAt: ts(l.expiresAt) }));
}

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
    ...over,
  };
}

const lease = (j: Job): Lease => ({ job: j, token: `${j.id}.0b6c4b1e-8a0e-4a8b-9c41-3b2f7e5a9d10`, expiresAt: j.leaseExpiresAt! });

const cases: [string, Job][] = [
  ["a plain job", job()],
  ["every field set", job({
    id: "9223372036854775807",
    priority: 7,
    attempt: 3,
    maxAttempts: 1_000_000,
    finishedAt: new Date("2026-11-24T04:00:00.999Z"),
    headers: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tracestate: "k=v", "x-ünïcödé": "✓ ✓" },
    idempotencyKey: "order-42",
    errors: [
      { attempt: 1, message: "smtp timeout", at: new Date("2026-11-24T03:20:00.001Z"), workerId: "w-1" },
      { attempt: 2, message: "x".repeat(300), at: new Date("2026-11-24T03:25:00Z"), workerId: "" },
    ],
    leaseMs: 30_500,
    cancelRequested: true,
  })],
  ["a negative priority", job({ priority: -5 })],
  ["a large priority", job({ priority: 2_147_483_647 })],
  ["an empty payload and defaults", job({ payload: new Uint8Array(), contentType: "", workerId: null, attempt: 0, maxAttempts: 1 })],
  ["a payload of 1 MiB", job({ payload: new Uint8Array(1024 * 1024).map((_, i) => i % 251) })],
  ["a payload of 200 bytes (two-byte lengths)", job({ payload: new Uint8Array(200).fill(7) })],
  ["times before 1970 and on the second", job({ runAt: new Date(-1500), createdAt: new Date(0), leaseExpiresAt: new Date(1000) })],
  ["a sub-second lease", job({ leaseMs: 250 })],
  ["a job in every state", job({ state: "dead" })],
  ["a long unicode type", job({ type: "τύπος-".repeat(40) })],
];

describe("hand-written LeasedJob encoding", () => {
  it.each(cases)("writes the same bytes as protobuf-es for %s", (_name, j) => {
    const l = lease(j);
    expect(Buffer.from(encodeLeasedJob(l)).equals(Buffer.from(slow(l)))).toBe(true);
  });

  it("makes a LeaseResponse that decodes like the ordinary one", () => {
    const leases = cases.map(([, j]) => lease(j));
    const fast = toBinary(LeaseResponseSchema, leaseResponse(leases));
    const reference = toBinary(
      LeaseResponseSchema,
      create(LeaseResponseSchema, { jobs: leases.map((l) => ({ job: jobToPb(l.job), leaseToken: l.token, leaseExpiresAt: ts(l.expiresAt) })) }),
    );
    expect(Buffer.from(fast).equals(Buffer.from(reference))).toBe(true);
    const decoded = fromBinary(LeaseResponseSchema, fast);
    expect(decoded.jobs.map((j) => j.job!.id)).toEqual(leases.map((l) => l.job.id));
    expect(decoded.jobs[1]!.job!.headers["x-ünïcödé"]).toBe("✓ ✓");
  });

  it("stays in step with the schema: every Job field is covered", () => {
    // A new field in jobwire.v1.Job must be written by lease-encoding.ts too.
    const fields = JobFieldNumbers();
    expect(fields).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
  });
});

function JobFieldNumbers(): number[] {
  const jobField = LeasedJobSchema.fields.find((f) => f.localName === "job")!;
  return jobField.message!.fields.map((f) => f.number).sort((a, b) => a - b);
}
