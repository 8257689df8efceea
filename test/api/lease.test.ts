import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import { eventually, makeJob, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, expectCode, json, ms, stateOf, uniqueQueue } from "./helpers.js";

let tb: TestBroker;
beforeAll(async () => {
  // A long poll interval: a job that arrives quickly got there by NOTIFY.
  tb = await startTestBroker({ pollIntervalMs: 60_000, schedulerIntervalMs: 60_000 });
});
afterAll(async () => {
  await tb.stop();
});

const zeroBackoff = { initialBackoff: ms(0), jitter: 0 };

describe("Lease", () => {
  it("does not claim on returned credit when its queue was found empty; the next NOTIFY wakes it", async () => {
    const queue = uniqueQueue();
    const store = tb.app.broker.store;
    const claim = store.claim;
    let claims = 0;
    store.claim = (...args) => {
      if (args[0].includes(queue)) claims++;
      return claim.apply(store, args);
    };
    try {
      const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 2 });
      await enqueue(tb, { queue });
      const [first] = await s.take(1);
      await tb.workers.ack({ leaseTokens: [first!.leaseToken] });
      const before = claims;
      s.credit(1);
      await enqueue(tb, { queue });
      await s.take(1);
      // One claim, woken by the NOTIFY; none for the credit, as the queue was empty.
      expect(claims - before).toBe(1);
      s.kill();
    } finally {
      store.claim = claim;
    }
  });

  it("wakes one idle stream per NOTIFY, not every stream on the queue", async () => {
    const queue = uniqueQueue();
    const { store, dispatcher } = tb.app.broker;
    const claim = store.claim;
    let claims = 0;
    store.claim = (...args) => {
      if (args[0].includes(queue)) claims++;
      return claim.apply(store, args);
    };
    const streams = [0, 1].map(() => new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 5 }));
    const bothIdle = () => eventually(async () => (dispatcher.idleStreamsOn(queue) === 2 ? true : undefined));
    try {
      await bothIdle();
      const before = claims;
      await enqueue(tb, { queue });
      await eventually(async () => (streams[0]!.pending + streams[1]!.pending === 1 ? true : undefined));
      // Every claim in flight has ended once both sleep again.
      await bothIdle();
      expect(claims - before).toBe(1);
      // The next one goes to the other stream.
      await enqueue(tb, { queue });
      await eventually(async () => (streams[0]!.pending === 1 && streams[1]!.pending === 1 ? true : undefined));
      await bothIdle();
      expect(claims - before).toBe(2);
    } finally {
      store.claim = claim;
      for (const s of streams) s.kill();
    }
  });

  it("spreads a burst over idle streams when one stream's credit is not enough, without polling", async () => {
    const queue = uniqueQueue();
    const streams = [0, 1, 2].map(() => new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 3 }));
    try {
      await eventually(async () => (tb.app.broker.dispatcher.idleStreamsOn(queue) === 3 ? true : undefined));
      // One Enqueue call: one statement, one NOTIFY, one stream woken.
      await enqueue(tb, ...Array.from({ length: 9 }, () => ({ queue })));
      // The poll interval is 60 s: only the chain of full claims brings the others.
      const got = await Promise.all(streams.map((s) => s.take(3, 5000)));
      expect(new Set(got.flat().map((l) => l.job!.id)).size).toBe(9);
    } finally {
      for (const s of streams) s.kill();
    }
  });

  it("delivers in priority, then run_at, then id order", async () => {
    const queue = uniqueQueue();
    const ids = await enqueue(tb, { queue, priority: 0 }, { queue, priority: 10 }, { queue, priority: 0 }, { queue, priority: 5 });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 4 });
    const got = await s.take(4);
    expect(got.map((l) => l.job!.id)).toEqual([ids[1], ids[3], ids[0], ids[2]]);
    expect(got.every((l) => l.job!.state === JobState.RUNNING && l.job!.attempt === 1)).toBe(true);
    s.kill();
  });

  it("never has more jobs out than the credit it was given", async () => {
    const queue = uniqueQueue();
    await enqueue(tb, ...Array.from({ length: 10 }, () => ({ queue })));
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 3 });
    const first = await s.take(3);
    await tb.workers.ack({ leaseTokens: [first[0]!.leaseToken] });
    await enqueue(tb, { queue }); // a NOTIFY: a broker ignoring credit would deliver now
    s.credit(1);
    await s.take(1);
    const running = await tb.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1 AND state = 'running'", [queue]);
    expect(running.rows[0].n).toBe(3);
    expect(s.pending).toBe(0);
    s.kill();
  });

  it("wakes an idle worker by NOTIFY, not by polling", async () => {
    const queue = uniqueQueue();
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    await eventually(async () => (tb.app.broker.dispatcher.openStreams > 0 ? true : undefined));
    const [id] = await enqueue(tb, { queue });
    const [got] = await s.take(1, 5000); // the poll interval is 60 s
    expect(got!.job!.id).toBe(id);
    s.kill();
  });

  it("serves several queues from one stream", async () => {
    const a = uniqueQueue("a");
    const b = uniqueQueue("b");
    await enqueue(tb, { queue: a }, { queue: b, priority: 1 });
    const s = new TestLeaseStream(tb.workers, { queues: [a, b], maxInFlight: 2 });
    const got = await s.take(2);
    expect(got.map((l) => l.job!.queue)).toEqual([b, a]);
    s.kill();
  });

  it("two workers racing for the same jobs never share one", async () => {
    const queue = uniqueQueue();
    const total = 300;
    await enqueue(tb, ...Array.from({ length: total }, (_, i) => ({ queue, payload: json(i) })));
    const seen = new Map<string, number>();
    const work = async (s: TestLeaseStream) => {
      while (seen.size < total) {
        let batch;
        try {
          batch = await s.take(Math.max(1, s.pending), 200);
        } catch {
          continue; // the other worker may have taken the last ones
        }
        for (const l of batch) seen.set(l.job!.id, (seen.get(l.job!.id) ?? 0) + 1);
        await tb.workers.ack({ leaseTokens: batch.map((l) => l.leaseToken) });
        s.credit(batch.length);
      }
    };
    const s1 = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 20, workerId: "w1" });
    const s2 = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 20, workerId: "w2" });
    await Promise.all([work(s1), work(s2)]);
    expect(seen.size).toBe(total);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    const { rows } = await tb.db.query("SELECT worker_id, count(*)::int AS n FROM jobwire.jobs WHERE queue = $1 AND state = 'completed' GROUP BY 1", [queue]);
    expect(rows.reduce((a, r) => a + r.n, 0)).toBe(total);
    s1.kill();
    s2.kill();
  });

  it("polls once per queue per interval, however many streams sit idle on it (issue 14, finding 8)", async () => {
    // 1,000 idle streams once cost 1,000 empty claims a second.
    const polling = await startTestBroker({ pollIntervalMs: 100 });
    const queue = uniqueQueue();
    const store = polling.app.broker.store;
    const claim = store.claim;
    let claims = 0;
    store.claim = (...args) => {
      if (args[0].includes(queue)) claims++;
      return claim.apply(store, args);
    };
    const streams = Array.from({ length: 50 }, () => new TestLeaseStream(polling.workers, { queues: [queue], maxInFlight: 5 }));
    try {
      // Each stream's first claim finds the queue empty; then they are idle.
      await eventually(async () => (claims >= 50 ? true : undefined), 10_000, "every stream's first claim");
      const before = claims;
      const start = Date.now();
      await eventually(async () => (Date.now() - start >= 1000 ? true : undefined), 5000, "a second of idling");
      // About ten polls in a second at 100 ms, one stream each: not 500.
      expect(claims - before).toBeLessThanOrEqual(15);
      // And the poll still finds work that came without a NOTIFY.
      await polling.db.query("ALTER TABLE jobwire.jobs DISABLE TRIGGER jobs_notify_inserted");
      await makeJob(polling.db, { queue });
      await polling.db.query("ALTER TABLE jobwire.jobs ENABLE TRIGGER jobs_notify_inserted");
      const got = await Promise.any(streams.map((s) => s.take(1, 5000)));
      expect(got).toHaveLength(1);
    } finally {
      store.claim = claim;
      for (const s of streams) s.kill();
      await polling.stop();
    }
  });

  it("answers an open on an empty queue at once with an empty message, so the worker knows it is connected", async () => {
    // With the default 15 s keepalive, a worker on an empty queue heard nothing for 15 s.
    const s = new TestLeaseStream(tb.workers, { queues: [uniqueQueue()] });
    await eventually(async () => (s.messages >= 1 ? true : undefined), 5000, "the first message");
    expect(s.pending).toBe(0);
    s.kill();
  });

  it("sends empty keepalive messages on idle streams", async () => {
    const quick = await startTestBroker({ keepaliveMs: 100 });
    try {
      const s = new TestLeaseStream(quick.workers, { queues: [uniqueQueue()] });
      await eventually(async () => (s.messages >= 2 ? true : undefined), 5000, "keepalives");
      expect(s.pending).toBe(0);
      s.kill();
    } finally {
      await quick.stop();
    }
  });

  it("ends cleanly when the worker half-closes, returning unsent jobs", async () => {
    const queue = uniqueQueue();
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    s.finish();
    expect(await s.ended).toBeNull();
  });

  it("refuses a bad open with INVALID_ARGUMENT", async () => {
    for (const [o, field] of [
      [{ queues: [] }, "open.queues"],
      [{ queues: ["bad queue"] }, "open.queues[0]"],
      [{ queues: ["ok"], maxInFlight: 0 }, "open.max_in_flight"],
      [{ queues: ["ok"], maxInFlight: 5000 }, "open.max_in_flight"],
      [{ queues: ["ok"], leaseMs: 5 }, "open.lease_duration"],
    ] as const) {
      const s = new TestLeaseStream(tb.workers, o as never);
      const err = await s.ended;
      expect(String(err)).toContain("invalid_argument");
      expect(String(err)).toContain(field);
    }
  });
});

describe("Ack, Nack, Heartbeat", () => {
  it("acks in batches, and reports tokens that are not current as lost", async () => {
    const queue = uniqueQueue();
    await enqueue(tb, { queue }, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [a, b] = await s.take(2);
    const first = await tb.workers.ack({ leaseTokens: [a!.leaseToken, b!.leaseToken] });
    expect(first.lostLeaseTokens).toEqual([]);
    expect(await stateOf(tb, a!.job!.id)).toBe("completed");
    const again = await tb.workers.ack({ leaseTokens: [a!.leaseToken] });
    expect(again.lostLeaseTokens).toEqual([a!.leaseToken]);
    await expectCode(tb.workers.ack({ leaseTokens: ["not-a-token"] }), Code.InvalidArgument, "lease_tokens[0]");
    await expectCode(tb.workers.ack({ leaseTokens: [] }), Code.InvalidArgument, "lease_tokens");
    s.kill();
  });

  it("keeps a lease after its stream is gone: a reconnected worker can ack", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [l] = await s.take(1);
    s.kill();
    await s.ended;
    expect(await stateOf(tb, id!)).toBe("running");
    expect((await tb.workers.ack({ leaseTokens: [l!.leaseToken] })).lostLeaseTokens).toEqual([]);
    expect(await stateOf(tb, id!)).toBe("completed");
  });

  it("retries a transient failure after the computed backoff", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue, maxAttempts: 5, retry: { initialBackoff: ms(10_000), multiplier: 3, jitter: 0 } });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [l] = await s.take(1);
    const before = Date.now();
    const res = await tb.workers.nack({ leaseToken: l!.leaseToken, error: "smtp timeout" });
    expect(res.state).toBe(JobState.RETRYABLE);
    const delay = timestampDate(res.runAt!).getTime() - before;
    expect(delay).toBeGreaterThan(9_000);
    expect(delay).toBeLessThan(11_000);
    const { job } = await tb.jobs.getJob({ id: id! });
    expect(job!.errors).toHaveLength(1);
    expect(job!.errors[0]).toMatchObject({ attempt: 1, message: "smtp timeout", workerId: "test-worker" });
    s.kill();
  });

  it("records error messages with NULs and over 64 KiB instead of refusing them", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [l] = await s.take(1);
    await tb.workers.nack({ leaseToken: l!.leaseToken, error: `bad\u0000byte ${"x".repeat(100_000)}` });
    const { job } = await tb.jobs.getJob({ id: id! });
    const msg = job!.errors[0]!.message;
    expect(msg.startsWith("bad\uFFFDbyte xxx")).toBe(true);
    expect(msg.endsWith("[truncated]")).toBe(true);
    expect(Buffer.byteLength(msg)).toBeLessThanOrEqual(64 * 1024);
    s.kill();
  });

  it("honours retry_after, and redelivers with a new token", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [first] = await s.take(1);
    const res = await tb.workers.nack({ leaseToken: first!.leaseToken, error: "try again now", retryAfter: ms(0) });
    expect(res.state).toBe(JobState.AVAILABLE);
    s.credit(1);
    const [second] = await s.take(1);
    expect(second!.job!.id).toBe(id);
    expect(second!.job!.attempt).toBe(2);
    expect(second!.leaseToken).not.toBe(first!.leaseToken);
    s.kill();
  });

  it("moves a job to DEAD at once on a permanent failure", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue, maxAttempts: 10 });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [l] = await s.take(1);
    const res = await tb.workers.nack({ leaseToken: l!.leaseToken, error: "invalid email", permanent: true });
    expect(res.state).toBe(JobState.DEAD);
    const { job } = await tb.jobs.getJob({ id: id! });
    expect(job).toMatchObject({ state: JobState.DEAD, attempt: 1 });
    expect(job!.finishedAt).toBeDefined();
    expect(job!.errors.map((e) => e.message)).toEqual(["invalid email"]);
    s.kill();
  });

  it("moves a job to DEAD when its attempts run out, keeping every error", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue, maxAttempts: 3, retry: zeroBackoff });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 1 });
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [l] = await s.take(1);
      expect(l!.job!.attempt).toBe(attempt);
      // Each delivery carries the job as it stands: running, with the earlier attempts' errors.
      expect(l!.job!.state).toBe(JobState.RUNNING);
      expect(l!.job!.workerId).not.toBe("");
      expect(l!.job!.errors.map((e) => e.message)).toEqual(Array.from({ length: attempt - 1 }, (_, i) => `boom ${i + 1}`));
      const res = await tb.workers.nack({ leaseToken: l!.leaseToken, error: `boom ${attempt}` });
      expect(res.state).toBe(attempt < 3 ? JobState.AVAILABLE : JobState.DEAD);
      s.credit(1);
    }
    const { job } = await tb.jobs.getJob({ id: id! });
    expect(job!.state).toBe(JobState.DEAD);
    expect(job!.errors.map((e) => [e.attempt, e.message])).toEqual([
      [1, "boom 1"],
      [2, "boom 2"],
      [3, "boom 3"],
    ]);
    s.kill();
  });

  it("takes the lease length from the job, then the worker, then the queue, then the default", async () => {
    const [withQueue, bare] = [uniqueQueue(), uniqueQueue()];
    await tb.admin.setQueueConfig({ queue: withQueue, leaseDuration: ms(120_000) });
    const leaseMs = async (queue: string, jobLease: number | undefined, workerLease: number | undefined) => {
      await enqueue(tb, { queue, ...(jobLease === undefined ? {} : { leaseDuration: ms(jobLease) }) });
      const s = new TestLeaseStream(tb.workers, { queues: [queue], ...(workerLease === undefined ? {} : { leaseMs: workerLease }) });
      const [l] = await s.take(1);
      s.kill();
      const { rows } = await tb.db.query<{ ms: number }>("SELECT leased_for_ms AS ms FROM jobwire.jobs WHERE id = $1", [l!.job!.id]);
      return rows[0]!.ms;
    };
    expect(await leaseMs(withQueue, 90_000, 60_000)).toBe(90_000);
    expect(await leaseMs(withQueue, undefined, 60_000)).toBe(60_000);
    expect(await leaseMs(withQueue, undefined, undefined)).toBe(120_000);
    expect(await leaseMs(bare, undefined, undefined)).toBe(tb.app.config.defaultLeaseMs);
  });

  it("extends a lease on heartbeat, so the reaper leaves it alone", async () => {
    const queue = uniqueQueue();
    await enqueue(tb, { queue, leaseDuration: ms(200) });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [l] = await s.take(1);
    const hb = await tb.workers.heartbeat({ leaseTokens: [l!.leaseToken], extendBy: ms(60_000) });
    expect(hb.results[0]!.lost).toBe(false);
    expect(timestampDate(hb.results[0]!.leaseExpiresAt!).getTime()).toBeGreaterThan(Date.now() + 50_000);
    expect(await tb.app.broker.store.reapExpired(100)).toEqual([]);
    // Without extend_by a heartbeat renews by the lease's own length.
    const hb2 = await tb.workers.heartbeat({ leaseTokens: [l!.leaseToken] });
    const left = timestampDate(hb2.results[0]!.leaseExpiresAt!).getTime() - Date.now();
    expect(left).toBeLessThanOrEqual(250);
    s.kill();
  });
});

describe("acks on the Lease stream", () => {
  it("completes jobs acked on the stream, lists lost tokens, and answers a bad ack alone", async () => {
    const queue = uniqueQueue();
    const ids = await enqueue(tb, { queue }, { queue }, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 3 });
    const leases = await s.take(3);
    expect(s.header?.get("jobwire-lease-acks")).toBe("1");
    // One acked on the stream, with a token of a job another call already completed.
    await tb.workers.ack({ leaseTokens: [leases[2]!.leaseToken] });
    s.ack(1n, [leases[0]!.leaseToken, leases[2]!.leaseToken]);
    expect(await s.ackResult(1n)).toMatchObject({ ackId: 1n, lostLeaseTokens: [leases[2]!.leaseToken], errorCode: 0 });
    // A malformed token fails that ack, not the stream, and not the next ack.
    s.ack(2n, ["not-a-token"]);
    s.ack(3n, [leases[1]!.leaseToken]);
    expect(await s.ackResult(2n)).toMatchObject({ errorCode: Code.InvalidArgument });
    expect((await s.ackResult(2n)).errorMessage).toContain("lease_tokens");
    expect(await s.ackResult(3n)).toMatchObject({ lostLeaseTokens: [], errorCode: 0 });
    for (const id of ids) expect(await stateOf(tb, id)).toMatch(/completed|missing/);
    // The stream still delivers.
    s.credit(3);
    const [late] = await enqueue(tb, { queue });
    expect((await s.take(1))[0]!.job!.id).toBe(late);
    s.kill();
  });

  it("answers the acks in flight before it ends, when the worker half-closes", async () => {
    const queue = uniqueQueue();
    await enqueue(tb, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 1 });
    const [l] = await s.take(1);
    s.ack(7n, [l!.leaseToken]);
    s.finish();
    expect(await s.ended).toBeNull();
    expect(s.ackResults.get(7n)).toMatchObject({ lostLeaseTokens: [], errorCode: 0 });
    expect(await stateOf(tb, l!.job!.id)).toMatch(/completed|missing/);
  });
});

describe("lease expiry and the reaper", () => {
  it("reclaims an expired lease, redelivers it, and refuses the stale token everywhere", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue, leaseDuration: ms(150), retry: zeroBackoff });
    const s1 = new TestLeaseStream(tb.workers, { queues: [queue], workerId: "slow", maxInFlight: 1 });
    const [stale] = await s1.take(1);
    const s2 = new TestLeaseStream(tb.workers, { queues: [queue], workerId: "fresh" });
    const [fresh] = await s2.take(1); // arrives once the reaper has reclaimed the first lease
    expect(fresh!.job!.id).toBe(id);
    expect(fresh!.job!.attempt).toBe(2);

    expect((await tb.workers.ack({ leaseTokens: [stale!.leaseToken] })).lostLeaseTokens).toEqual([stale!.leaseToken]);
    await expectCode(tb.workers.nack({ leaseToken: stale!.leaseToken, error: "late" }), Code.FailedPrecondition, "lease_token");
    const hb = await tb.workers.heartbeat({ leaseTokens: [stale!.leaseToken, fresh!.leaseToken] });
    expect(hb.results.map((r) => r.lost)).toEqual([true, false]);

    expect((await tb.workers.ack({ leaseTokens: [fresh!.leaseToken] })).lostLeaseTokens).toEqual([]);
    const { job } = await tb.jobs.getJob({ id: id! });
    expect(job!.state).toBe(JobState.COMPLETED);
    expect(job!.errors).toMatchObject([{ attempt: 1, message: "lease expired", workerId: "slow" }]);
    s1.kill();
    s2.kill();
  });

  it("puts a reclaimed or retried job back at its place in line, not behind the backlog enqueued after it", async () => {
    // Finding 16: ordered by run_at, a reclaimed job waited behind the
    // whole backlog (a p50 of 28.6 s under load).
    const queue = uniqueQueue();
    const [reclaimed] = await enqueue(tb, { queue, leaseDuration: ms(150), retry: zeroBackoff });
    const [retried] = await enqueue(tb, { queue, retry: zeroBackoff });
    const s1 = new TestLeaseStream(tb.workers, { queues: [queue], workerId: "first", maxInFlight: 2 });
    const taken = await s1.take(2);
    expect(taken.map((l) => l.job!.id)).toEqual([reclaimed, retried]);
    const backlog = await enqueue(tb, ...Array.from({ length: 20 }, () => ({ queue })));
    await tb.workers.nack({ leaseToken: taken[1]!.leaseToken, error: "again" });
    // The first lease expires and the reaper takes it back.
    await eventually(async () => ((await tb.jobs.getJob({ id: reclaimed! })).job!.attempt === 1 && (await stateOf(tb, reclaimed!)) === "available" ? true : undefined));
    s1.kill();
    // Two slots: the two jobs first in line, whatever order one batch lists them in.
    const s2 = new TestLeaseStream(tb.workers, { queues: [queue], workerId: "second", maxInFlight: 2 });
    const next = await s2.take(2);
    expect(next.map((l) => l.job!.id).sort()).toEqual([reclaimed, retried].sort());
    expect(backlog).toHaveLength(20);
    s2.kill();
  });

  it("reclaims the job of a worker killed mid-job", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue, leaseDuration: ms(150), retry: zeroBackoff });
    const crashed = new TestLeaseStream(tb.workers, { queues: [queue] });
    await crashed.take(1);
    crashed.kill();
    const survivor = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [l] = await survivor.take(1);
    expect(l!.job!.id).toBe(id);
    await tb.workers.ack({ leaseTokens: [l!.leaseToken] });
    expect(await stateOf(tb, id!)).toBe("completed");
    survivor.kill();
  });

  it("dead-letters an expired lease on the last attempt", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue, maxAttempts: 1, leaseDuration: ms(100) });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    await s.take(1);
    s.kill();
    const job = await eventually(async () => {
      const { job } = await tb.jobs.getJob({ id: id! });
      return job!.state === JobState.DEAD ? job : undefined;
    });
    expect(job!.errors.map((e) => e.message)).toEqual(["lease expired"]);
  });

  it("cancels, rather than retries, an expired job that had a cancel pending", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue, leaseDuration: ms(100) });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    await s.take(1);
    await tb.jobs.cancelJob({ id: id! });
    s.kill();
    await eventually(async () => ((await stateOf(tb, id!)) === "cancelled" ? true : undefined));
  });
});

describe("scheduling", () => {
  it("promotes a delayed job when it is due", async () => {
    const queue = uniqueQueue();
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [id] = await enqueue(tb, { queue, schedule: { case: "delay", value: ms(300) } });
    expect(await stateOf(tb, id!)).toBe("scheduled");
    // The scheduler's ceiling is 60 s here; it wakes for the job's own run_at.
    const [l] = await s.take(1, 10_000);
    expect(l!.job!.id).toBe(id);
    s.kill();
  });

  it("brings a retryable job back after its backoff", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue, retry: { initialBackoff: ms(200), jitter: 0 } });
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [l] = await s.take(1);
    await tb.workers.nack({ leaseToken: l!.leaseToken, error: "later" });
    expect(await stateOf(tb, id!)).toBe("retryable");
    s.credit(1);
    const [again] = await s.take(1, 10_000);
    expect(again!.job!.attempt).toBe(2);
    s.kill();
  });
});

describe("transactional enqueue (SQL)", () => {
  it("creates nothing when the transaction rolls back", async () => {
    const queue = uniqueQueue();
    const c = await tb.db.connect();
    try {
      await c.query("BEGIN");
      await c.query("SELECT jobwire.enqueue($1, 'send_welcome_email', '{\"user_id\": 42}')", [queue]);
      await c.query("ROLLBACK");
    } finally {
      c.release();
    }
    const { rows } = await tb.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1", [queue]);
    expect(rows[0].n).toBe(0);
  });

  it("makes the job visible, and wakes workers, only at commit", async () => {
    const queue = uniqueQueue();
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    await eventually(async () => (tb.app.broker.dispatcher.openStreams > 0 ? true : undefined));
    const c = await tb.db.connect();
    let id: string;
    try {
      await c.query("BEGIN");
      await c.query("CREATE TEMP TABLE accounts (id serial, email text) ON COMMIT DROP");
      const acct = await c.query("INSERT INTO accounts (email) VALUES ('ada@example.com') RETURNING id");
      const r = await c.query("SELECT jobwire.enqueue($1, 'send_welcome_email', jsonb_build_object('user_id', $2::int)) AS id", [queue, acct.rows[0].id]);
      id = String(r.rows[0].id);
      const outside = await tb.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1", [queue]);
      expect(outside.rows[0].n).toBe(0);
      await c.query("COMMIT");
    } finally {
      c.release();
    }
    const [l] = await s.take(1, 5000); // by NOTIFY: the poll interval is 60 s
    expect(l!.job!.id).toBe(id);
    expect(JSON.parse(new TextDecoder().decode(l!.job!.payload))).toEqual({ user_id: 1 });
    s.kill();
  });

  it("dedupes by idempotency key and validates its input", async () => {
    const queue = uniqueQueue();
    const a = await tb.db.query("SELECT jobwire.enqueue($1, 't', idempotency_key => 'k') AS id", [queue]);
    const b = await tb.db.query("SELECT jobwire.enqueue($1, 't', idempotency_key => 'k') AS id", [queue]);
    expect(b.rows[0].id).toBe(a.rows[0].id);
    await expect(tb.db.query("SELECT jobwire.enqueue('bad queue', 't')")).rejects.toThrow(/invalid queue name/);
    await expect(tb.db.query("SELECT jobwire.enqueue($1, 't', max_attempts => 0)", [queue])).rejects.toThrow(/max_attempts/);
  });

  it("refuses what gRPC refuses, naming the argument, with a hint (issue 14, finding 14)", async () => {
    const queue = uniqueQueue();
    const refused = async (args: string, message: RegExp) => {
      const err = await tb.db.query(`SELECT jobwire.enqueue($1, 't', ${args})`, [queue]).then(
        () => null,
        (e: { code?: string; message: string; hint?: string }) => e,
      );
      expect(err, args).not.toBeNull();
      expect(err!.code, args).toMatch(/^(22023|54000)$/);
      expect(err!.message, args).toMatch(message);
      return err!;
    };
    const lease = await refused("lease_duration => '-5 seconds'", /lease_duration must be between 100 ms and 24 hours/);
    expect(lease.hint).toMatch(/broker default/);
    await refused("lease_duration => '25 hours'", /lease_duration/);
    const ttl = await refused("idempotency_key => 'k', idempotency_ttl => '-1 hour'", /idempotency_ttl must be positive/);
    expect(ttl.hint).toMatch(/24 hours/);
    await refused("run_at => '4714-11-24 00:00:00+00 BC'", /run_at .* outside years 1 to 9999/);
    await refused(`headers => '{"traceparent": 1}'`, /every header value must be a string/);
    await refused(`headers => '[1]'`, /headers must be a JSON object/);
    const { rows } = await tb.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1", [queue]);
    expect(rows[0].n).toBe(0);
  });

  it("takes its default max_attempts from the broker's JOBWIRE_DEFAULT_MAX_ATTEMPTS, as gRPC does (finding 13)", async () => {
    const other = await startTestBroker({ defaultMaxAttempts: 7 }, { databaseUrl: tb.databaseUrl });
    try {
      const queue = uniqueQueue();
      const viaSql = await tb.db.query("SELECT jobwire.enqueue($1, 't') AS id", [queue]);
      const [viaGrpc] = await enqueue(other, { queue });
      const { rows } = await tb.db.query("SELECT id, max_attempts FROM jobwire.jobs WHERE id = ANY($1::bigint[]) ORDER BY id", [
        [viaSql.rows[0].id, viaGrpc],
      ]);
      expect(rows.map((r) => r.max_attempts)).toEqual([7, 7]);
    } finally {
      await other.stop();
    }
  });
});
