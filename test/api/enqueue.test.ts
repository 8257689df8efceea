import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { JobSpecSchema, JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import { makeJob, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, expectCode, json, ms, stateOf, uniqueQueue } from "./helpers.js";

let tb: TestBroker;
beforeAll(async () => {
  tb = await startTestBroker();
});
afterAll(async () => {
  await tb.stop();
});

describe("Enqueue", () => {
  it("creates jobs with their fields, available now", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, {
      queue,
      type: "send_welcome_email",
      payload: json({ userId: 42 }),
      priority: 5,
      maxAttempts: 3,
      headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    });
    const { job } = await tb.jobs.getJob({ id: id! });
    expect(job).toMatchObject({
      id,
      queue,
      type: "send_welcome_email",
      contentType: "application/json",
      state: JobState.AVAILABLE,
      priority: 5,
      attempt: 0,
      maxAttempts: 3,
      headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    });
    expect(JSON.parse(new TextDecoder().decode(job!.payload))).toEqual({ userId: 42 });
  });

  it("inserts a batch in order, and defaults max_attempts to 25", async () => {
    const queue = uniqueQueue();
    const ids = await enqueue(tb, ...Array.from({ length: 50 }, (_, i) => ({ queue, payload: json({ i }) })));
    expect(ids).toHaveLength(50);
    expect(new Set(ids).size).toBe(50);
    const { rows } = await tb.db.query("SELECT id, payload, max_attempts FROM jobwire.jobs WHERE queue = $1 ORDER BY id", [queue]);
    expect(rows.map((r) => JSON.parse(r.payload.toString()).i)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(rows.map((r) => String(r.id))).toEqual(ids);
    expect(rows.every((r) => r.max_attempts === 25)).toBe(true);
  });

  it("schedules delayed and future jobs, and runs past run_at at once", async () => {
    const queue = uniqueQueue();
    const [delayed, future, past] = await enqueue(
      tb,
      { queue, schedule: { case: "delay", value: ms(60_000) } },
      { queue, schedule: { case: "runAt", value: timestampFromDate(new Date(Date.now() + 3600_000)) } },
      { queue, schedule: { case: "runAt", value: timestampFromDate(new Date(Date.now() - 3600_000)) } },
    );
    expect(await stateOf(tb, delayed!)).toBe("scheduled");
    expect(await stateOf(tb, future!)).toBe("scheduled");
    expect(await stateOf(tb, past!)).toBe("available");
  });

  it("uses the queue's max_attempts when the job sets none", async () => {
    const queue = uniqueQueue();
    await tb.admin.setQueueConfig({ queue, maxAttempts: 7 });
    const [id] = await enqueue(tb, { queue });
    expect((await tb.jobs.getJob({ id: id! })).job!.maxAttempts).toBe(7);
  });

  it("is all or nothing: one bad job in a batch writes none", async () => {
    const queue = uniqueQueue();
    await expectCode(enqueue(tb, { queue }, { queue, maxAttempts: 0 }), Code.InvalidArgument, "jobs[1].max_attempts");
    const { rows } = await tb.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1", [queue]);
    expect(rows[0].n).toBe(0);
  });
});

it("gives each of many concurrent callers its own jobs (coalesced into shared statements)", async () => {
  const queue = uniqueQueue();
  const calls = await Promise.all(
    Array.from({ length: 40 }, (_, c) =>
      enqueue(tb, ...Array.from({ length: 1 + (c % 4) }, (_, j) => ({ queue, payload: json({ c, j }) }))).then((ids) => ({ c, ids })),
    ),
  );
  const all = calls.flatMap((x) => x.ids);
  expect(new Set(all).size).toBe(all.length);
  for (const { c, ids } of calls) {
    expect(ids).toHaveLength(1 + (c % 4));
    const { rows } = await tb.db.query("SELECT id, payload FROM jobwire.jobs WHERE id = ANY($1::bigint[]) ORDER BY id", [ids]);
    expect(rows.map((r) => JSON.parse(r.payload.toString()))).toEqual(ids.map((_, j) => ({ c, j })));
  }
});

describe("idempotency", () => {
  it("returns the first job for a repeated key, with duplicate = true", async () => {
    const queue = uniqueQueue();
    const first = await tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t", idempotencyKey: "order-1" })] });
    const second = await tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t", idempotencyKey: "order-1" })] });
    expect(first.results[0]).toMatchObject({ duplicate: false });
    expect(second.results[0]).toMatchObject({ jobId: first.results[0]!.jobId, duplicate: true });
    // The same key on another queue is another job.
    const other = await tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue: `${queue}-b`, type: "t", idempotencyKey: "order-1" })] });
    expect(other.results[0]!.duplicate).toBe(false);
  });

  it("dedupes within one batch", async () => {
    const queue = uniqueQueue();
    const res = await tb.jobs.enqueue({
      jobs: [
        create(JobSpecSchema, { queue, type: "t", idempotencyKey: "k" }),
        create(JobSpecSchema, { queue, type: "t" }),
        create(JobSpecSchema, { queue, type: "t", idempotencyKey: "k" }),
      ],
    });
    expect(res.results.map((r) => r.duplicate)).toEqual([false, false, true]);
    expect(res.results[2]!.jobId).toBe(res.results[0]!.jobId);
  });

  it("creates exactly one job when 20 enqueues with one key race", async () => {
    const queue = uniqueQueue();
    const results = await Promise.all(
      Array.from({ length: 20 }, () => tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t", idempotencyKey: "race" })] })),
    );
    const ids = new Set(results.map((r) => r.results[0]!.jobId));
    expect(ids.size).toBe(1);
    expect(results.filter((r) => !r.results[0]!.duplicate)).toHaveLength(1);
    const { rows } = await tb.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1", [queue]);
    expect(rows[0].n).toBe(1);
  });

  it("lets the key be used again once its TTL has passed", async () => {
    const queue = uniqueQueue();
    // A job whose key's TTL passed a second ago, instead of waiting for it.
    const { id: first } = await makeJob(tb.db, { queue, idempotencyKey: "k", idempotencyTtlMs: -1000 });
    const res = await tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t", idempotencyKey: "k" })] });
    expect(res.results[0]!.duplicate).toBe(false);
    expect(res.results[0]!.jobId).not.toBe(first);
    // The old job keeps its key for display.
    expect((await tb.jobs.getJob({ id: first! })).job!.idempotencyKey).toBe("k");
  });
});

describe("bad input", () => {
  const q = "valid-queue";
  const cases: [string, Parameters<typeof enqueue>[1][], Code, string][] = [
    ["empty queue", [{ queue: "" }], Code.InvalidArgument, "jobs[0].queue"],
    ["bad queue name", [{ queue: "no spaces!" }], Code.InvalidArgument, "jobs[0].queue"],
    ["queue name too long", [{ queue: "q".repeat(129) }], Code.InvalidArgument, "jobs[0].queue"],
    ["empty type", [{ queue: q, type: "" }], Code.InvalidArgument, "jobs[0].type"],
    ["negative delay", [{ queue: q, schedule: { case: "delay", value: { seconds: -5n, nanos: 0 } } }], Code.InvalidArgument, "jobs[0].delay"],
    ["max_attempts 0", [{ queue: q, maxAttempts: 0 }], Code.InvalidArgument, "jobs[0].max_attempts"],
    ["max_attempts negative", [{ queue: q, maxAttempts: -1 }], Code.InvalidArgument, "jobs[0].max_attempts"],
    ["lease too short", [{ queue: q, leaseDuration: ms(10) }], Code.InvalidArgument, "jobs[0].lease_duration"],
    ["retry multiplier below 1", [{ queue: q, retry: { multiplier: 0.5 } }], Code.InvalidArgument, "jobs[0].retry.multiplier"],
    ["retry jitter above 1", [{ queue: q, retry: { jitter: 2 } }], Code.InvalidArgument, "jobs[0].retry.jitter"],
    ["negative backoff", [{ queue: q, retry: { initialBackoff: { seconds: -1n, nanos: 0 } } }], Code.InvalidArgument, "jobs[0].retry.initial_backoff"],
    ["ttl without key", [{ queue: q, idempotencyTtl: ms(1000) }], Code.InvalidArgument, "jobs[0].idempotency_ttl"],
    ["idempotency key too long", [{ queue: q, idempotencyKey: "k".repeat(256) }], Code.InvalidArgument, "jobs[0].idempotency_key"],
    ["empty batch", [], Code.InvalidArgument, "jobs"],
    ["payload over 1 MiB", [{ queue: q, payload: new Uint8Array(1024 * 1024 + 1) }], Code.ResourceExhausted, "jobs[0].payload"],
    ["second job bad", [{ queue: q }, { queue: "" }], Code.InvalidArgument, "jobs[1].queue"],
    ["NUL in type", [{ queue: q, type: "a\u0000b" }], Code.InvalidArgument, "jobs[0].type"],
    ["NUL in a header", [{ queue: q, headers: { k: "v\u0000" } }], Code.InvalidArgument, "jobs[0].headers"],
    ["NUL in idempotency key", [{ queue: q, idempotencyKey: "\u0000" }], Code.InvalidArgument, "jobs[0].idempotency_key"],
  ];
  it.each(cases)("%s", async (_name, specs, code, field) => {
    if (specs.length === 0) {
      await expectCode(tb.jobs.enqueue({ jobs: [] }), code, field);
    } else {
      await expectCode(enqueue(tb, ...specs), code, field);
    }
  });

  it("refuses a batch over the limit", async () => {
    const jobs = Array.from({ length: 1001 }, () => create(JobSpecSchema, { queue: q, type: "t" }));
    await expectCode(tb.jobs.enqueue({ jobs }), Code.InvalidArgument, "limit is 1000");
  });

  it("refuses a message over 4 MiB with RESOURCE_EXHAUSTED, and stays up", async () => {
    const jobs = Array.from({ length: 5 }, () => create(JobSpecSchema, { queue: q, type: "t", payload: new Uint8Array(1000 * 1000) }));
    await expectCode(tb.jobs.enqueue({ jobs }), Code.ResourceExhausted);
    const [id] = await enqueue(tb, { queue: q });
    expect(id).toBeTruthy();
  });

  it("answers NOT_FOUND and INVALID_ARGUMENT for job ids", async () => {
    await expectCode(tb.jobs.getJob({ id: "999999999" }), Code.NotFound);
    await expectCode(tb.jobs.getJob({ id: "abc" }), Code.InvalidArgument, "id");
    await expectCode(tb.jobs.getJob({ id: "" }), Code.InvalidArgument, "id");
    await expectCode(tb.jobs.cancelJob({ id: "999999999" }), Code.NotFound);
  });
});

describe("CancelJob", () => {
  it("cancels a waiting job at once, and is idempotent", async () => {
    const queue = uniqueQueue();
    const [a, b] = await enqueue(tb, { queue }, { queue, schedule: { case: "delay", value: ms(60_000) } });
    for (const id of [a!, b!]) {
      const { job } = await tb.jobs.cancelJob({ id });
      expect(job!.state).toBe(JobState.CANCELLED);
      expect(job!.finishedAt).toBeDefined();
      expect((await tb.jobs.cancelJob({ id })).job!.state).toBe(JobState.CANCELLED);
    }
  });

  it("flags a running job; its worker sees it on heartbeat; a nack then cancels it", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue });
    const stream = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [leased] = await stream.take(1);
    const { job } = await tb.jobs.cancelJob({ id: id! });
    expect(job).toMatchObject({ state: JobState.RUNNING, cancelRequested: true });
    const hb = await tb.workers.heartbeat({ leaseTokens: [leased!.leaseToken] });
    expect(hb.results[0]).toMatchObject({ lost: false, cancelRequested: true });
    const nack = await tb.workers.nack({ leaseToken: leased!.leaseToken, error: "aborted" });
    expect(nack.state).toBe(JobState.CANCELLED);
    stream.kill();
  });

  it("refuses to cancel a completed job", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue });
    const stream = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [leased] = await stream.take(1);
    await tb.workers.ack({ leaseTokens: [leased!.leaseToken] });
    await expectCode(tb.jobs.cancelJob({ id: id! }), Code.FailedPrecondition, "completed");
    stream.kill();
  });
});
