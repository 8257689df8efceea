import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import { makeJob, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, expectCode, ms, stateOf, uniqueQueue } from "./helpers.js";

/**
 * Issue 14: one caller's input must never hurt another caller, and no job
 * may get stuck. Each test reproduces a finding against the code before the
 * fix, over real gRPC and Postgres.
 */
let tb: TestBroker;
beforeAll(async () => {
  // The reaper is driven by hand (runOnce) where a test needs to see one pass.
  tb = await startTestBroker({ reaperIntervalMs: 600_000 });
});
afterAll(async () => {
  await tb.stop();
});

const DAY = 24 * 3600_000;

describe("finding 1: a retry delay that overflows", () => {
  it("saturates at max_backoff for any attempt, instead of overflowing", async () => {
    const { rows } = await tb.db.query(
      `SELECT extract(epoch FROM jobwire.retry_delay(160, '{"initial_ms":1000,"max_ms":1000,"multiplier":100,"jitter":0}', null)) AS s,
              extract(epoch FROM jobwire.retry_delay(2147483647, '{"initial_ms":1e300,"max_ms":1e308,"multiplier":1e9}', null)) AS huge`,
    );
    expect(Number(rows[0].s)).toBe(1);
    // Out-of-range stored values are clamped: at most 365 days.
    expect(Number(rows[0].huge)).toBeLessThanOrEqual(365 * 86400);
  });

  it("lets the reaper reclaim every other lease past a row it cannot handle, and dead-letters that row with the reason", async () => {
    const queue = uniqueQueue("poison");
    // A policy no arithmetic can read: the batch statement fails on it.
    const poison = await makeJob(tb.db, { queue, state: "running", leaseExpiresInMs: -1000, attempt: 3, retry: { initial_ms: "soon" } });
    const overflow = await makeJob(tb.db, {
      queue,
      state: "running",
      leaseExpiresInMs: -1000,
      attempt: 160,
      maxAttempts: 1000,
      retry: { initial_ms: 1000, max_ms: 1000, multiplier: 100 },
    });
    const ordinary = [];
    for (let i = 0; i < 5; i++) ordinary.push(await makeJob(tb.db, { queue, state: "running", leaseExpiresInMs: -1000 }));
    await tb.app.loops.reaper.runOnce();
    for (const j of ordinary) expect(await stateOf(tb, j.id)).toMatch(/^(retryable|available)$/);
    expect(await stateOf(tb, overflow.id)).toMatch(/^(retryable|available)$/);
    expect(await stateOf(tb, poison.id)).toBe("dead");
    const got = await tb.jobs.getJob({ id: poison.id });
    expect(got.job!.state).toBe(JobState.DEAD);
    expect(got.job!.errors.at(-1)!.message).toMatch(/lease expired, and its next attempt could not be scheduled/);
    // And the next pass has nothing left to trip on.
    await tb.app.loops.reaper.runOnce();
  });

  it("refuses backoffs past the documented bounds, naming the field", async () => {
    const queue = uniqueQueue();
    await expectCode(
      tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t", retry: { maxBackoff: ms(366 * DAY) } })] }),
      Code.InvalidArgument,
      "jobs[0].retry.max_backoff",
    );
    await expectCode(tb.admin.setQueueConfig({ queue, retry: { initialBackoff: ms(400 * DAY) } }), Code.InvalidArgument, "retry.initial_backoff");
    await expectCode(tb.admin.setQueueConfig({ queue, retry: { multiplier: 101 } }), Code.InvalidArgument, "retry.multiplier");
  });
});

describe("finding 2: coalesced statements share failure", () => {
  it("fails only the caller whose value cannot be stored; 800 concurrent neighbours all succeed", async () => {
    const queue = uniqueQueue();
    const good = Array.from({ length: 800 }, () => tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "ok" })] }));
    // Before 4713 BC: Postgres cannot hold it, and it once failed the whole shared INSERT.
    const bad = expectCode(
      tb.jobs.enqueue({
        jobs: [create(JobSpecSchema, { queue, type: "bad", schedule: { case: "runAt", value: { seconds: -210_000_000_000n, nanos: 0 } } })],
      }),
      Code.InvalidArgument,
      "jobs[0].run_at",
    );
    const outcomes = await Promise.allSettled(good);
    expect(outcomes.filter((o) => o.status === "rejected")).toHaveLength(0);
    await bad;
    const { rows } = await tb.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1", [queue]);
    expect(rows[0].n).toBe(800);
  });

  it("refuses an ack token past the bigint range without touching other workers' acks", async () => {
    const queue = uniqueQueue();
    await enqueue(tb, ...Array.from({ length: 50 }, () => ({ queue })));
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 50 });
    const leased = await s.take(50);
    const acks = leased.map((l) => tb.workers.ack({ leaseTokens: [l.leaseToken] }));
    const bad = expectCode(
      tb.workers.ack({ leaseTokens: ["9223372036854775808.0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"] }),
      Code.InvalidArgument,
      "lease_tokens",
    );
    for (const r of await Promise.all(acks)) expect(r.lostLeaseTokens).toEqual([]);
    await bad;
    await expectCode(tb.jobs.getJob({ id: "9223372036854775808" }), Code.InvalidArgument, "id");
    s.kill();
  });
});

describe("finding 3: durations over 2^31 ms", () => {
  it("takes a delay, idempotency TTL and retry_after of 30 and 400 days", async () => {
    const queue = uniqueQueue();
    const res = await tb.jobs.enqueue({
      jobs: [
        create(JobSpecSchema, { queue, type: "t", schedule: { case: "delay", value: ms(30 * DAY) } }),
        create(JobSpecSchema, { queue, type: "t", schedule: { case: "delay", value: ms(400 * DAY) }, idempotencyKey: "k", idempotencyTtl: ms(400 * DAY) }),
      ],
    });
    const { rows } = await tb.db.query(
      `SELECT round(extract(epoch FROM run_at - now()) / 86400) AS days, round(extract(epoch FROM idempotency_expires_at - now()) / 86400) AS ttl
       FROM jobwire.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [res.results.map((r) => r.jobId)],
    );
    expect(rows.map((r) => Number(r.days))).toEqual([30, 400]);
    expect(Number(rows[1].ttl)).toBe(400);

    const [id] = await enqueue(tb, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 1 });
    const [l] = await s.take(1);
    expect(l!.job!.id).toBe(id);
    const nacked = await tb.workers.nack({ leaseToken: l!.leaseToken, error: "later", retryAfter: ms(30 * DAY) });
    expect(nacked.state).toBe(JobState.RETRYABLE);
    s.kill();
  });

  it("answers INVALID_ARGUMENT past the documented maximum of 3650 days, naming the field", async () => {
    const queue = uniqueQueue();
    await expectCode(
      tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t", schedule: { case: "delay", value: ms(3651 * DAY) } })] }),
      Code.InvalidArgument,
      "jobs[0].delay",
    );
    await expectCode(
      tb.jobs.enqueue({ jobs: [create(JobSpecSchema, { queue, type: "t", idempotencyKey: "k", idempotencyTtl: ms(3651 * DAY) })] }),
      Code.InvalidArgument,
      "jobs[0].idempotency_ttl",
    );
    const [id] = await enqueue(tb, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 1 });
    const [l] = await s.take(1);
    expect(l!.job!.id).toBe(id);
    await expectCode(tb.workers.nack({ leaseToken: l!.leaseToken, error: "x", retryAfter: ms(3651 * DAY) }), Code.InvalidArgument, "retry_after");
    s.kill();
  });

  it("runs with JOBWIRE_IDEMPOTENCY_TTL_MS over 24.86 days", async () => {
    const other = await startTestBroker({ idempotencyTtlMs: 30 * DAY }, { databaseUrl: tb.databaseUrl });
    try {
      const queue = uniqueQueue();
      const [id] = await enqueue(other, { queue, idempotencyKey: "k" });
      const { rows } = await tb.db.query("SELECT round(extract(epoch FROM idempotency_expires_at - now()) / 86400) AS d FROM jobwire.jobs WHERE id = $1", [id]);
      expect(Number(rows[0].d)).toBe(30);
    } finally {
      await other.stop();
    }
  });
});

describe("finding 5: the error history is bounded", () => {
  it("keeps a job with a 1 MiB payload and 49 nacks of 64 KiB deliverable and readable", async () => {
    const queue = uniqueQueue();
    const payload = new Uint8Array(1024 * 1024 - 64).fill(65);
    const [id] = await enqueue(tb, { queue, payload, maxAttempts: 100, retry: { initialBackoff: ms(0), maxBackoff: ms(0) } });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 1 });
    const big = "e".repeat(64 * 1024);
    for (let i = 0; i < 49; i++) {
      const [l] = await s.take(1);
      await tb.workers.nack({ leaseToken: l!.leaseToken, error: `${i}:${big}` });
      s.credit(1);
    }
    // The 50th delivery still fits in one message, history included.
    const [last] = await s.take(1);
    expect(last!.job!.id).toBe(id);
    expect(last!.job!.attempt).toBe(50);
    await tb.workers.nack({ leaseToken: last!.leaseToken, error: "final", permanent: true });
    const { job } = await tb.jobs.getJob({ id });
    expect(job!.state).toBe(JobState.DEAD);
    // The first entries, then the newest, and a count of what was left out.
    expect(job!.errors[0]!.message.startsWith("0:")).toBe(true);
    expect(job!.errors.at(-1)!.message).toBe("final");
    expect(job!.errors.length + job!.errorsDropped).toBe(50);
    expect(job!.errorsDropped).toBeGreaterThan(0);
    const list = await tb.admin.listJobs({ queue, states: [JobState.DEAD] });
    expect(list.jobs.map((j) => j.id)).toEqual([id]);
    s.kill();
  });

  it("cuts a ListJobs page short, and says so, rather than answer with more than the message limit", async () => {
    const queue = uniqueQueue();
    const payload = new Uint8Array(1000 * 1024).fill(66);
    // Six 1000 KiB payloads cannot share a 4 MiB message.
    for (let i = 0; i < 6; i++) await enqueue(tb, { queue, payload });
    const first = await tb.admin.listJobs({ queue, pageSize: 10 });
    expect(first.sizeLimited).toBe(true);
    expect(first.jobs.length).toBeGreaterThan(0);
    expect(first.jobs.length).toBeLessThan(6);
    const seen = first.jobs.map((j) => j.id);
    let token = first.nextPageToken;
    while (token) {
      const page = await tb.admin.listJobs({ queue, pageSize: 10, pageToken: token });
      seen.push(...page.jobs.map((j) => j.id));
      token = page.nextPageToken;
    }
    expect(new Set(seen).size).toBe(6);
  });
});

describe("finding 4: undecodable input", () => {
  /** One raw request; returns the status the protocol carried, as a gRPC code number or a Connect code name. */
  async function send(path: string, contentType: string, body: Buffer, h2 = true): Promise<{ grpc?: string; connect?: string; http: number }> {
    const url = new URL(path, tb.url);
    if (!h2) {
      const res = await fetch(url, { method: "POST", headers: { "content-type": contentType, "x-grpc-web": "1", "connect-protocol-version": "1" }, body: new Uint8Array(body) });
      const buf = Buffer.from(await res.arrayBuffer());
      const grpc = res.headers.get("grpc-status") ?? /grpc-status: ?(\d+)/.exec(buf.toString("latin1"))?.[1];
      const connect = contentType.startsWith("application/json") || contentType.startsWith("application/proto") ? (JSON.parse(buf.toString() || "{}") as { code?: string }).code : undefined;
      return { grpc: grpc ?? undefined, connect, http: res.status };
    }
    const session = (await import("node:http2")).connect(tb.url);
    try {
      return await new Promise((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": path, "content-type": contentType, te: "trailers", "connect-protocol-version": "1" });
        let status: string | undefined;
        let http = 0;
        const chunks: Buffer[] = [];
        req.on("response", (h) => {
          http = Number(h[":status"]);
          status = (h["grpc-status"] as string | undefined) ?? status;
        });
        req.on("trailers", (t) => (status = (t["grpc-status"] as string | undefined) ?? status));
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("error", reject);
        req.on("close", () => {
          const buf = Buffer.concat(chunks);
          let end: string | undefined;
          if (buf.length > 5 && buf[0] === 0x02) end = (JSON.parse(buf.subarray(5).toString()) as { error?: { code?: string } }).error?.code;
          else if (contentType === "application/proto" || contentType === "application/json") end = (JSON.parse(buf.toString() || "{}") as { code?: string }).code;
          resolve({ grpc: status ?? /grpc-status: ?(\d+)/.exec(buf.toString("latin1"))?.[1], connect: end, http });
        });
        req.end(body);
      });
    } finally {
      session.close();
    }
  }

  /** One length-prefixed message: a flags byte, a 4-byte big-endian length, the bytes. */
  const framed = (msg: Buffer, flags = 0) => {
    const head = Buffer.alloc(5);
    head[0] = flags;
    head.writeUInt32BE(msg.length, 1);
    return Buffer.concat([head, msg]);
  };
  // An end-group tag with no group open, then garbage: no protobuf reader accepts it.
  const garbage = Buffer.from([0x3c, 0x0a, 0x02, 0x33, 0x38, 0xff, 0xff]);

  it("answers INVALID_ARGUMENT, never INTERNAL, on every path: gRPC, gRPC-Web, Connect, the Lease stream, reflection", async () => {
    const cases: [string, string, Buffer, boolean, string][] = [
      ["/jobwire.v1.JobService/GetJob", "application/grpc", framed(garbage), true, "grpc"],
      ["/jobwire.v1.JobService/GetJob", "application/grpc-web+proto", framed(garbage), false, "grpc"],
      ["/jobwire.v1.JobService/GetJob", "application/grpc-web+proto", framed(garbage), true, "grpc"],
      ["/jobwire.v1.AdminService/ListJobs", "application/proto", garbage, false, "connect"],
      ["/jobwire.v1.AdminService/ListJobs", "application/proto", garbage, true, "connect"],
      ["/jobwire.v1.WorkerService/Lease", "application/grpc", framed(garbage), true, "grpc"],
      ["/jobwire.v1.WorkerService/Lease", "application/connect+proto", framed(garbage), true, "connect"],
      ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "application/grpc", framed(garbage), true, "grpc"],
      // The compressed flag with no encoding to decompress it by.
      ["/jobwire.v1.JobService/GetJob", "application/grpc-web+proto", framed(Buffer.from([0x0a, 0x01, 0x31]), 1), false, "grpc"],
    ];
    for (const [path, ct, body, h2, kind] of cases) {
      const r = await send(path, ct, body, h2);
      const what = `${path} ${ct} over ${h2 ? "HTTP/2" : "HTTP/1.1"}: ${JSON.stringify(r)}`;
      if (kind === "grpc") expect(r.grpc, what).toBe("3");
      else expect(r.connect, what).toBe("invalid_argument");
    }
  });
});
