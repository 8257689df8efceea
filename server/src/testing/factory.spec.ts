import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobState } from "../model.js";
import { stateToPb } from "../transport/convert.js";
import { ageJob, expireLease, makeJob, makeJobs, type JobFixture } from "./factory.js";
import { startTestBroker, TestLeaseStream, type TestBroker } from "./index.js";

/** The job factory makes rows the broker itself can read, lease, ack and reap. */
let tb: TestBroker;
beforeAll(async () => {
  // The reaper is driven by hand here.
  tb = await startTestBroker({ reaperIntervalMs: 600_000 });
});
afterAll(async () => {
  await tb.stop();
});

let n = 0;
const uniqueQueue = () => `factory-${n++}`;

interface Row {
  state: JobState;
  lease_token: string | null;
  queued_at: Date | null;
  created_at: Date;
  run_at: Date;
  finished_at: Date | null;
  prune_at: Date | null;
  worker_id: string | null;
  leased_for_ms: number | null;
  idempotency_expires_at: Date | null;
}

async function row(id: string): Promise<Row> {
  const { rows } = await tb.db.query<Row>("SELECT * FROM jobwire.jobs WHERE id = $1", [id]);
  return rows[0]!;
}

const DAY = 24 * 3600_000;

describe("makeJob", () => {
  // Every state, and the variants of a state that read differently.
  const cases: [string, Omit<JobFixture, "queue">][] = [
    ["scheduled", { state: "scheduled" }],
    ["available", { state: "available" }],
    ["available, retried at once", { state: "available", attempt: 1, errors: [{ attempt: 1, message: "x" }] }],
    ["running", { state: "running" }],
    ["running, cancel requested", { state: "running", cancelRequested: true, leaseMs: 5000 }],
    ["retryable", { state: "retryable", attempt: 2, maxAttempts: 3 }],
    ["completed", { state: "completed" }],
    ["completed, keyed", { state: "completed", idempotencyKey: "k", idempotencyTtlMs: 3 * DAY }],
    ["dead", { state: "dead", attempt: 3, maxAttempts: 3, finishedAgoMs: DAY }],
    ["cancelled while waiting", { state: "cancelled" }],
    ["cancelled while running", { state: "cancelled", attempt: 1, cancelRequested: true, errors: [{ attempt: 1, message: "stop" }] }],
  ];

  it.each(cases)("makes a %s job that GetJob reads, with the columns the broker would leave", async (_, f) => {
    const queue = uniqueQueue();
    const made = await makeJob(tb.db, { queue, ...f });
    const state = f.state!;
    const { job } = await tb.jobs.getJob({ id: made.id });
    expect(job).toMatchObject({ id: made.id, queue, state: stateToPb(state), cancelRequested: f.cancelRequested ?? false });
    const r = await row(made.id);

    // A lease, and its token, only while running.
    expect(made.token !== null).toBe(state === "running");
    expect(r.lease_token).toBe(made.token);
    expect(job!.leaseExpiresAt !== undefined).toBe(state === "running");
    if (state === "running") {
      expect(job!.attempt).toBeGreaterThanOrEqual(1);
      expect(job!.workerId).not.toBe("");
      expect(timestampDate(job!.leaseExpiresAt!).getTime() - Date.now()).toBeGreaterThan((f.leaseMs ?? 30_000) - 5000);
    }
    // A job that ran keeps its last worker and lease length, as ack and nack leave them.
    expect(r.worker_id !== null).toBe(job!.attempt > 0);
    expect(r.leased_for_ms !== null).toBe(job!.attempt > 0);

    // In line from when it was due; finished when final; pruned only when completed.
    expect(r.queued_at).not.toBeNull();
    expect(r.created_at.getTime()).toBeLessThanOrEqual(r.queued_at!.getTime());
    if (state === "scheduled" || state === "retryable") expect(r.run_at.getTime()).toBeGreaterThan(Date.now());
    const final = ["completed", "dead", "cancelled"].includes(state);
    expect(job!.finishedAt !== undefined).toBe(final);
    if (final) expect(r.queued_at!.getTime()).toBeLessThanOrEqual(r.finished_at!.getTime());
    expect(r.prune_at !== null).toBe(state === "completed");
    if (r.prune_at) {
      expect(r.prune_at.getTime()).toBeGreaterThanOrEqual(r.finished_at!.getTime() + DAY);
      if (r.idempotency_expires_at) expect(r.prune_at.getTime()).toBeGreaterThanOrEqual(r.idempotency_expires_at.getTime());
    }
    // A failed attempt is in the history.
    if (state === "dead" || state === "retryable") {
      expect(job!.errors.map((e) => e.attempt)).toEqual([job!.attempt]);
      expect(job!.errors[0]!.workerId).toBe("factory-worker");
    }
    if (f.errors) expect(job!.errors.map((e) => e.message)).toEqual(f.errors.map((e) => e.message));
    for (const e of job!.errors) expect(timestampDate(e.at!).getTime()).toBeLessThanOrEqual((job!.finishedAt ? timestampDate(job!.finishedAt) : new Date()).getTime() + 1000);

    // ListJobs reads it too.
    const { jobs } = await tb.admin.listJobs({ queue });
    expect(jobs.map((j) => j.id)).toEqual([made.id]);
  });

  it("refuses a job the broker could not have left", async () => {
    const queue = uniqueQueue();
    await expect(makeJob(tb.db, { queue, state: "running", attempt: 0 })).rejects.toThrow(/attempt/);
    await expect(makeJob(tb.db, { queue, state: "retryable", attempt: 3, maxAttempts: 3 })).rejects.toThrow(/attempts left/);
    await expect(makeJob(tb.db, { queue, state: "dead", leaseExpiresInMs: -1 })).rejects.toThrow(/no lease/);
    await expect(makeJob(tb.db, { queue, state: "available", cancelRequested: true })).rejects.toThrow(/cancel_requested/);
    await expect(makeJob(tb.db, { queue, state: "running", finishedAgoMs: 1 })).rejects.toThrow(/not finished/);
    expect((await tb.admin.listJobs({ queue })).jobs).toEqual([]);
  });

  it("gives a running job a token the broker's Heartbeat and Ack take", async () => {
    const { id, token } = await makeJob(tb.db, { queue: uniqueQueue(), state: "running" });
    const leaseToken = `${id}.${token}`;
    const beat = await tb.workers.heartbeat({ leaseTokens: [leaseToken] });
    expect(beat.results[0]!.leaseExpiresAt).toBeDefined();
    expect((await tb.workers.ack({ leaseTokens: [leaseToken] })).lostLeaseTokens).toEqual([]);
    expect((await row(id)).state).toBe("completed");
  });

  it("puts an available job in line by when it was due, ahead of one enqueued after it", async () => {
    // With no queued_at (as this factory once made them), the made job sorted
    // after every job the broker enqueued.
    const queue = uniqueQueue();
    const made = await makeJob(tb.db, { queue, runInMs: -1000 });
    const { results } = await tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t" })] });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 1 });
    try {
      expect((await s.take(1))[0]!.job!.id).toBe(made.id);
    } finally {
      s.kill();
    }
    expect(results[0]!.jobId).not.toBe(made.id);
  });
});

describe("makeJobs", () => {
  it("makes many jobs in one statement, in id order, with a queue and a key per row", async () => {
    const base = uniqueQueue();
    const made = await makeJobs(tb.db, 500, { queue: (i) => `${base}-${i % 2}`, idempotencyKey: (i) => `key-${i}`, state: "completed" });
    expect(made).toHaveLength(500);
    const ids = made.map((m) => BigInt(m.id));
    expect(ids).toEqual([...ids].sort((a, b) => (a < b ? -1 : 1)));
    const { rows } = await tb.db.query<{ queue: string; idempotency_key: string }>(
      "SELECT queue, idempotency_key FROM jobwire.jobs WHERE id = ANY($1::bigint[]) ORDER BY id",
      [made.map((m) => m.id)],
    );
    expect(rows[0]).toEqual({ queue: `${base}-0`, idempotency_key: "key-0" });
    expect(rows[499]).toEqual({ queue: `${base}-1`, idempotency_key: "key-499" });
    // A live key still deduplicates through the broker.
    const { results } = await tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue: `${base}-1`, type: "t", idempotencyKey: "key-3" })] });
    expect(results[0]).toMatchObject({ jobId: made[3]!.id, duplicate: true });
  });
});

describe("ageJob", () => {
  it("moves a whole job back in time, its error history and prune time with it", async () => {
    const queue = uniqueQueue();
    const { id } = await makeJob(tb.db, { queue, state: "completed", errors: [{ attempt: 1, message: "first try" }], attempt: 2 });
    const before = await row(id);
    expect(await ageJob(tb.db, id, { finishedAgoMs: 2 * DAY })).toBe(1);
    const after = await row(id);
    const { job } = await tb.jobs.getJob({ id });
    const shift = before.finished_at!.getTime() - after.finished_at!.getTime();
    expect(Math.abs(Date.now() - 2 * DAY - after.finished_at!.getTime())).toBeLessThan(5000);
    // Within a millisecond: the columns keep microseconds, Date does not.
    for (const k of ["created_at", "queued_at", "run_at", "prune_at"] as const) {
      expect(Math.abs(before[k]!.getTime() - after[k]!.getTime() - shift), k).toBeLessThanOrEqual(1);
    }
    expect(timestampDate(job!.errors[0]!.at!).getTime()).toBeLessThanOrEqual(after.finished_at!.getTime());
  });

  it("places a backlog's due time, or a key's expiry, and refuses a job without that time", async () => {
    const queue = uniqueQueue();
    const { id } = await makeJob(tb.db, { queue, idempotencyKey: "k", idempotencyTtlMs: 60_000 });
    await ageJob(tb.db, { queue }, { dueAgoMs: 90_000 });
    expect(Date.now() - (await row(id)).run_at.getTime()).toBeGreaterThanOrEqual(89_000);
    await ageJob(tb.db, [id], { keyExpiredAgoMs: 1000 });
    const { results } = await tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t", idempotencyKey: "k" })] });
    expect(results[0]!.duplicate).toBe(false);
    await expect(ageJob(tb.db, id, { finishedAgoMs: 1000 })).rejects.toThrow(/0 of 1/);
    await expect(ageJob(tb.db, id, {})).rejects.toThrow(/exactly one/);
  });
});

describe("expireLease", () => {
  it("lets the reaper take a running job, and refuses a job that is not running", async () => {
    const queue = uniqueQueue();
    const [a, b] = await makeJobs(tb.db, 2, { queue, state: "running", maxAttempts: 2 });
    expect(await expireLease(tb.db, { queue })).toBe(2);
    const reaped = (await tb.app.broker.store.reapExpired(100)).filter((r) => r.queue === queue);
    expect(reaped.map((r) => r.id).sort()).toEqual([a!.id, b!.id].sort());
    expect((await row(a!.id)).state).toMatch(/^(retryable|available)$/);
    await expect(expireLease(tb.db, a!.id)).rejects.toThrow(/0 of 1/);
  });
});
