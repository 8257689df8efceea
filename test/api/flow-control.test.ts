import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { JobSpecSchema, JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import type { LeasedJob } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { eventually, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, expectCode, ms, stateOf, uniqueQueue } from "./helpers.js";

/**
 * Flow control (issue 11) over real gRPC: pause, queue config, limits,
 * ordering keys, rate limits and fairness. The claim that enforces them is
 * server/sql/functions/claim_{jobs,plain,gated}.sql.
 */
let tb: TestBroker;
beforeAll(async () => {
  // A long poll interval: whatever arrives quickly was woken by NOTIFY (or a rate limit's own timer).
  tb = await startTestBroker({ pollIntervalMs: 60_000, claimBatch: 100 });
});
afterAll(async () => {
  await tb.stop();
});

/** Waits until the stream has had `n` messages, then checks nothing more arrived with jobs. */
async function quiet(s: TestLeaseStream, pending: number): Promise<void> {
  // A claim happens after every change a test makes; give it a full round
  // trip (an empty message right after the open proves the stream is live).
  await eventually(async () => (s.messages >= 1 ? true : undefined), 5000, "the stream's first message");
  const settle = Date.now();
  await eventually(async () => (Date.now() - settle > 300 ? true : undefined), 2000, "a settle");
  expect(s.pending).toBe(pending);
}

function keys(jobs: LeasedJob[]): string[] {
  return jobs.map((l) => l.job!.concurrencyKey || l.job!.orderingKey);
}

describe("PauseQueue and ResumeQueue", () => {
  it("stop leasing at once, keep enqueue, acks, nacks and heartbeats working, and show in GetQueueStats", async () => {
    const queue = uniqueQueue("pause");
    const [running] = await enqueue(tb, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 5 });
    const [held] = await s.take(1);
    expect(held!.job!.id).toBe(running);

    const paused = await tb.admin.pauseQueue({ queue });
    expect(paused.config!.paused).toBe(true);
    const [waiting] = await enqueue(tb, { queue });
    await quiet(s, 0);
    expect(await stateOf(tb, waiting!)).toBe("available");
    const stats = await tb.admin.getQueueStats({ queues: [queue] });
    expect(stats.queues[0]!.paused).toBe(true);
    // The job already running is untouched by the pause.
    const beat = await tb.workers.heartbeat({ leaseTokens: [held!.leaseToken] });
    expect(beat.results[0]!.lost).toBe(false);
    expect((await tb.workers.ack({ leaseTokens: [held!.leaseToken] })).lostLeaseTokens).toEqual([]);
    // Still paused after the ack freed a slot; pausing twice is fine.
    await tb.admin.pauseQueue({ queue });
    await quiet(s, 0);

    const resumed = await tb.admin.resumeQueue({ queue });
    expect(resumed.config!.paused).toBe(false);
    const [l] = await s.take(1);
    expect(l!.job!.id).toBe(waiting);
    expect((await tb.admin.getQueueStats({ queues: [queue] })).queues[0]!.paused).toBe(false);
    s.kill();
  });

  it("leaves other queues on the same stream alone", async () => {
    const a = uniqueQueue("pa");
    const b = uniqueQueue("pb");
    await tb.admin.pauseQueue({ queue: a });
    await enqueue(tb, { queue: a }, { queue: b });
    const s = new TestLeaseStream(tb.workers, { queues: [a, b], maxInFlight: 5 });
    const [l] = await s.take(1);
    expect(l!.job!.queue).toBe(b);
    await quiet(s, 0);
    s.kill();
  });
});

describe("SetQueueConfig and GetQueueConfig", () => {
  it("set only the fields present, clear through update_mask, and answer with the whole config", async () => {
    const queue = uniqueQueue("cfg");
    const blank = await tb.admin.getQueueConfig({ queue });
    expect(blank.config).toMatchObject({ queue, paused: false });
    expect(blank.config!.maxRunning).toBeUndefined();

    await tb.admin.setQueueConfig({ queue, maxRunning: 5, rateLimit: { count: 10, period: ms(1000) } });
    const both = await tb.admin.setQueueConfig({ queue, maxAttempts: 3 });
    expect(both.config).toMatchObject({ maxRunning: 5, maxAttempts: 3, rateLimit: { count: 10 } });

    const cleared = await tb.admin.setQueueConfig({ queue, updateMask: { paths: ["max_running"] } });
    expect(cleared.config!.maxRunning).toBeUndefined();
    expect(cleared.config!.maxAttempts).toBe(3);
    expect((await tb.admin.getQueueConfig({ queue })).config!.rateLimit!.count).toBe(10);

    await expectCode(tb.admin.setQueueConfig({ queue, updateMask: { paths: ["colour"] } }), Code.InvalidArgument, "update_mask.paths[0]");
    await expectCode(tb.admin.setQueueConfig({ queue, maxRunning: 0 }), Code.InvalidArgument, "max_running");
    await expectCode(tb.admin.setQueueConfig({ queue, rateLimit: { count: 5, period: ms(0) } }), Code.InvalidArgument, "rate_limit.period");
    await expectCode(tb.admin.getQueueConfig({ queue: "no spaces" }), Code.InvalidArgument, "queue");
  });
});

describe("concurrency limits", () => {
  it("max_running caps the queue's running jobs, and an ack lets the next one start", async () => {
    const queue = uniqueQueue("maxrun");
    await tb.admin.setQueueConfig({ queue, maxRunning: 3 });
    await enqueue(tb, ...Array.from({ length: 10 }, () => ({ queue })));
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 10 });
    const first = await s.take(3);
    await quiet(s, 0);
    await tb.workers.ack({ leaseTokens: [first[0]!.leaseToken] });
    await s.take(1); // woken by the ack's NOTIFY, not a poll (60 s here)
    await quiet(s, 0);
    const { rows } = await tb.db.query("SELECT count(*)::int AS n, max(attempt) AS a FROM jobwire.jobs WHERE queue = $1 AND state = 'available'", [queue]);
    // Held-back jobs are not charged an attempt.
    expect(rows[0]).toEqual({ n: 6, a: 0 });
    s.kill();
  });

  it("max_running_per_key caps each key, while other keys keep flowing", async () => {
    const queue = uniqueQueue("perkey");
    await tb.admin.setQueueConfig({ queue, maxRunningPerKey: 2 });
    await enqueue(tb, ...Array.from({ length: 8 }, () => ({ queue, concurrencyKey: "tenant:a" })));
    await enqueue(tb, ...Array.from({ length: 3 }, () => ({ queue, concurrencyKey: "tenant:b" })));
    await enqueue(tb, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 20 });
    const got = await s.take(5);
    await quiet(s, 0);
    expect(keys(got).sort()).toEqual(["", "tenant:a", "tenant:a", "tenant:b", "tenant:b"]);
    const a = got.find((l) => l.job!.concurrencyKey === "tenant:a")!;
    await tb.workers.nack({ leaseToken: a.leaseToken, error: "again", retryAfter: ms(60_000) });
    const [next] = await s.take(1);
    expect(next!.job!.concurrencyKey).toBe("tenant:a");
    s.kill();
  });
});

describe("many keys", () => {
  // claimBatch is 100 here: round 1 visits 25 keys for up to four jobs
  // each (claim_gated.sql), round 2 visits more keys when they hold less.
  it("takes up to four jobs from each key visited, and goes on to other keys", async () => {
    const queue = uniqueQueue("quantum");
    await enqueue(tb, ...Array.from({ length: 400 }, (_, i) => ({ queue, concurrencyKey: `k${String(i % 40).padStart(2, "0")}` })));
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 100 });
    const got = await s.take(100);
    const per = new Map<string, number>();
    for (const k of keys(got)) per.set(k, (per.get(k) ?? 0) + 1);
    expect(Math.max(...per.values())).toBeLessThanOrEqual(4);
    expect(per.size).toBeGreaterThanOrEqual(25);
    s.kill();
  });

  it("fills a claim from keys that hold one job each, all at once", async () => {
    const queue = uniqueQueue("sparse");
    await enqueue(tb, ...Array.from({ length: 150 }, (_, i) => ({ queue, concurrencyKey: `k${String(i).padStart(3, "0")}` })));
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 100 });
    // One claim of 100, not 25: a short claim would leave the rest to the poll (60 s here).
    const got = await s.take(100);
    expect(new Set(keys(got)).size).toBe(100);
    await quiet(s, 0);
    s.kill();
  });

  it("skips keys at their cap and takes the next job of a key whose slot frees", async () => {
    const queue = uniqueQueue("capped");
    await tb.admin.setQueueConfig({ queue, maxRunningPerKey: 1 });
    await enqueue(tb, ...Array.from({ length: 90 }, (_, i) => ({ queue, concurrencyKey: `k${String(i % 30).padStart(2, "0")}` })));
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 100 });
    const got = await s.take(30);
    expect(new Set(keys(got)).size).toBe(30);
    await quiet(s, 0);
    await tb.workers.ack({ leaseTokens: [got[7]!.leaseToken] });
    const [next] = await s.take(1);
    expect(next!.job!.concurrencyKey).toBe(got[7]!.job!.concurrencyKey);
    await quiet(s, 0);
    s.kill();
  });
});

describe("ordering keys", () => {
  it("run one at a time in enqueue order; a retry keeps its place; completion lets the next start", async () => {
    const queue = uniqueQueue("order");
    const ids = await enqueue(
      tb,
      ...[1, 2, 3].map(() => ({ queue, orderingKey: "account:7", retry: { initialBackoff: ms(100), maxBackoff: ms(100), jitter: 0 } })),
      { queue, orderingKey: "account:8" },
    );
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 10 });
    const first = await s.take(2);
    expect(first.map((l) => l.job!.id).sort()).toEqual([ids[0], ids[3]].sort());
    await quiet(s, 0);
    const one = first.find((l) => l.job!.id === ids[0])!;
    // Fails: job 1 waits out its backoff, and still holds the key.
    expect((await tb.workers.nack({ leaseToken: one.leaseToken, error: "first try" })).state).toBe(JobState.RETRYABLE);
    const [again] = await s.take(1);
    expect(again!.job!.id).toBe(ids[0]);
    expect(again!.job!.attempt).toBe(2);
    await tb.workers.ack({ leaseTokens: [again!.leaseToken] });
    const [two] = await s.take(1);
    expect(two!.job!.id).toBe(ids[1]);
    await tb.workers.nack({ leaseToken: two!.leaseToken, error: "fatal", permanent: true });
    // A dead job releases the key.
    const [three] = await s.take(1);
    expect(three!.job!.id).toBe(ids[2]);
    s.kill();
  });

  it("a cancelled job releases its key too", async () => {
    const queue = uniqueQueue("ordercancel");
    const ids = await enqueue(tb, { queue, orderingKey: "k" }, { queue, orderingKey: "k" }, { queue, orderingKey: "k" });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 10 });
    const [head] = await s.take(1);
    expect(head!.job!.id).toBe(ids[0]);
    await tb.jobs.cancelJob({ id: ids[1]! });
    await tb.workers.ack({ leaseTokens: [head!.leaseToken] });
    const [next] = await s.take(1);
    expect(next!.job!.id).toBe(ids[2]);
    s.kill();
  });

  it("comes in through the SQL enqueue() as well", async () => {
    const queue = uniqueQueue("ordersql");
    const a = await tb.db.query("SELECT jobwire.enqueue($1, 't', ordering_key => 'o', concurrency_key => 'c') AS id", [queue]);
    const b = await tb.db.query("SELECT jobwire.enqueue($1, 't', ordering_key => 'o') AS id", [queue]);
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 10 });
    const [first] = await s.take(1);
    expect(first!.job!.id).toBe(a.rows[0].id);
    expect(first!.job!.concurrencyKey).toBe("c");
    await quiet(s, 0);
    await tb.workers.ack({ leaseTokens: [first!.leaseToken] });
    const [second] = await s.take(1);
    expect(second!.job!.id).toBe(b.rows[0].id);
    s.kill();
  });
});

/** Claim times by the database clock: when each job's current lease began. */
async function claimTimes(queue: string): Promise<number[]> {
  const { rows } = await tb.db.query<{ t: string }>(
    "SELECT extract(epoch FROM lease_expires_at - leased_for_ms * interval '1 millisecond') * 1000 AS t FROM jobwire.jobs WHERE queue = $1 AND state = 'running' ORDER BY 1",
    [queue],
  );
  return rows.map((r) => Number(r.t));
}

/** The GCRA bound: the k-th start (0-based) comes no sooner than (k - count + 1) emission intervals after the first. */
function expectRate(times: number[], count: number, periodMs: number): void {
  const interval = periodMs / count;
  for (let k = count; k < times.length; k++) {
    expect(times[k]! - times[0]!, `start ${k}`).toBeGreaterThanOrEqual((k - count + 1) * interval - 2);
  }
}

describe("rate limits", () => {
  it("rate_limit spaces a queue's starts, across the burst, without charging attempts", async () => {
    const queue = uniqueQueue("rate");
    await tb.admin.setQueueConfig({ queue, rateLimit: { count: 5, period: ms(500) } });
    await enqueue(tb, ...Array.from({ length: 12 }, () => ({ queue })));
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 20 });
    // The next start is announced by nobody: the stream's own timer, set
    // from the limiter's next-start time, brings them (the poll is 60 s).
    await s.take(12, 10_000);
    expectRate(await claimTimes(queue), 5, 500);
    const { rows } = await tb.db.query("SELECT max(attempt) AS a FROM jobwire.jobs WHERE queue = $1", [queue]);
    expect(rows[0].a).toBe(1);
    s.kill();
  });

  it("rate_limit_per_key limits each key on its own", async () => {
    const queue = uniqueQueue("keyrate");
    await tb.admin.setQueueConfig({ queue, rateLimitPerKey: { count: 2, period: ms(400) } });
    await enqueue(tb, ...Array.from({ length: 6 }, () => ({ queue, concurrencyKey: "x" })));
    await enqueue(tb, ...Array.from({ length: 2 }, () => ({ queue, concurrencyKey: "y" })));
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 20 });
    const first = await s.take(4);
    expect(keys(first).sort()).toEqual(["x", "x", "y", "y"]);
    await s.take(4, 10_000);
    const { rows } = await tb.db.query<{ t: string }>(
      `SELECT extract(epoch FROM lease_expires_at - leased_for_ms * interval '1 millisecond') * 1000 AS t
       FROM jobwire.jobs WHERE queue = $1 AND concurrency_key = 'x' ORDER BY 1`,
      [queue],
    );
    expectRate(rows.map((r) => Number(r.t)), 2, 400);
    s.kill();
  });
});

describe("fairness between keys", () => {
  it("starts a key's single job within a claim or two, however long another key's backlog", async () => {
    const queue = uniqueQueue("fair");
    const batch = Array.from({ length: 1000 }, () => create(JobSpecSchema, { queue, type: "t", concurrencyKey: "big" }));
    for (let i = 0; i < 3; i++) await tb.jobs.enqueue({ jobs: batch });
    const [small] = await enqueue(tb, { queue, concurrencyKey: "small" });
    // claimBatch is 100 here: B must come in the first claim or the second.
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 200 });
    const got = await s.take(200);
    expect(got.findIndex((l) => l.job!.id === small)).toBeGreaterThanOrEqual(0);
    s.kill();
  });
});
