import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, makeJobs, withDatabase } from "../testing/index.js";
import type { Queryable } from "./db.js";
import { JobStore } from "./jobs.js";
import { loadMigrations, migrate } from "./migrate.js";

/** Store-level checks against a real Postgres: the SQL itself. */
let pool: pg.Pool;
beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await createTestDatabase(), max: 4 });
});
afterAll(async () => {
  await pool.end();
});

const delay = async (attempt: number, job: object | null, queue: object | null = null): Promise<number> => {
  const { rows } = await pool.query("SELECT extract(epoch FROM jobwire.retry_delay($1, $2, $3)) * 1000 AS ms", [attempt, job, queue]);
  return Number(rows[0].ms);
};

describe("jobwire.retry_delay (backoff, computed rather than slept)", () => {
  it("grows exponentially and is capped", async () => {
    const p = { initial_ms: 1000, multiplier: 2, max_ms: 60_000, jitter: 0 };
    expect(await Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map((a) => delay(a, p)))).toEqual([1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
    // Very high attempt counts do not overflow.
    expect(await delay(100_000, p)).toBe(60_000);
  });

  it("uses the defaults: 1 s, doubling, capped at 1 h, 20% jitter", async () => {
    for (let i = 0; i < 20; i++) {
      const d = await delay(3, null);
      expect(d).toBeGreaterThanOrEqual(4000 * 0.8);
      expect(d).toBeLessThanOrEqual(4000);
    }
    expect(await delay(40, { jitter: 0 })).toBe(3600_000);
  });

  it("jitters downwards within the configured share", async () => {
    const seen = new Set<number>();
    for (let i = 0; i < 50; i++) {
      const d = await delay(1, { initial_ms: 10_000, jitter: 0.5 });
      expect(d).toBeGreaterThanOrEqual(5000);
      expect(d).toBeLessThanOrEqual(10_000);
      seen.add(Math.round(d));
    }
    expect(seen.size).toBeGreaterThan(10);
  });

  it("takes each field from the job, then the queue, then the default", async () => {
    expect(await delay(2, { jitter: 0 }, { initial_ms: 500, multiplier: 3 })).toBe(1500);
    expect(await delay(2, { jitter: 0, multiplier: 10 }, { initial_ms: 500, multiplier: 3 })).toBe(5000);
  });
});

describe("migrations", () => {
  it("apply once when several brokers start together", async () => {
    const url = new URL(await createTestDatabase());
    const admin = new pg.Client({ connectionString: url.toString() });
    await admin.connect();
    const fresh = `fresh_${process.pid}_${Date.now()}`;
    await admin.query(`CREATE DATABASE ${fresh}`);
    await admin.end();
    const clients = Array.from({ length: 4 }, () => new pg.Client({ connectionString: withDatabase(url.toString(), fresh) }));
    await Promise.all(clients.map((c) => c.connect()));
    const all = (await loadMigrations()).map((m) => m.version);
    const applied = await Promise.all(clients.map((c) => migrate(c)));
    // Exactly one broker applied each migration; the others found them done.
    expect(applied.flat().sort()).toEqual(all);
    expect(applied.filter((a) => a.length > 0)).toHaveLength(1);
    const { rows } = await clients[0]!.query("SELECT version FROM jobwire.migrations ORDER BY version");
    expect(rows.map((r) => r.version)).toEqual(all);
    expect(await migrate(clients[0]!)).toEqual([]);
    await Promise.all(clients.map((c) => c.end()));
  });
});

/** n running jobs in `queue` (one statement, so in id order on the table's pages), with their lease tokens. */
async function insertRunning(queue: string, n: number, db: Queryable = pool): Promise<{ id: string; lease_token: string }[]> {
  const made = await makeJobs(db, n, { queue, state: "running", maxAttempts: 5, leasedForMs: 60_000 });
  return made.map((m) => ({ id: m.id, lease_token: m.token! }));
}

/**
 * Turns on auto_explain (with actual row counts) for statements nested in
 * functions on this connection, and collects the plans of the UPDATEs of
 * jobwire.jobs that it reports.
 */
async function explainNestedUpdates(client: pg.ClientBase): Promise<string[]> {
  const plans: string[] = [];
  client.on("notice", (n) => {
    if (n.message?.includes("UPDATE jobwire.jobs")) plans.push(n.message);
  });
  await client.query("LOAD 'auto_explain'");
  for (const set of ["log_min_duration = 0", "log_nested_statements = on", "log_analyze = on"]) await client.query(`SET auto_explain.${set}`);
  await client.query("SET client_min_messages = log");
  return plans;
}

describe("leased-row statements", () => {
  it("never deadlock, however their token lists are ordered", async () => {
    const store = new JobStore(pool);
    const rows = await insertRunning("locks", 400);
    const refs = rows.map((r) => ({ id: r.id, token: r.lease_token }));
    const deadlocks = async () =>
      Number((await pool.query("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")).rows[0].deadlocks);
    const before = await deadlocks();
    // Heartbeats over everything, forwards and backwards, racing acks of slices in reverse.
    for (let round = 0; round < 8; round++) {
      const slice = refs.slice(round * 50, round * 50 + 50);
      await Promise.all([
        store.heartbeat(refs, null),
        store.heartbeat([...refs].reverse(), 30_000),
        store.ack([...slice].reverse()),
        store.heartbeat(refs.filter((_, i) => i % 3 === 0), null),
      ]);
    }
    expect(await deadlocks()).toBe(before);
    const { rows: left } = await pool.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = 'locks' AND state = 'running'");
    expect(left[0].n).toBe(0);
  });

  it("lock in id order whatever the plan, even one made on an empty table", async () => {
    // The deterministic form of a deadlock seen once under load. A
    // connection plans these functions once (a generic plan) and keeps the
    // plan; planned on an empty table, the UPDATE read jobs_running_idx
    // (queue, concurrency_key) in full, in the rows' physical order, and
    // took its locks in that order.
    const fresh = new pg.Pool({ connectionString: await createTestDatabase(), max: 3 });
    const calls = [
      "SELECT * FROM jobwire.heartbeat_leases($1, $2, NULL)",
      "SELECT * FROM jobwire.release_leases($1, $2)",
      "SELECT * FROM jobwire.ack_leases($1, $2, 3600000)",
      "SELECT * FROM jobwire.ack_leases($1, $2, 0)",
    ];
    const caller = await fresh.connect();
    const holder = await fresh.connect();
    try {
      await fresh.query("ALTER TABLE jobwire.jobs SET (autovacuum_enabled = false)");
      for (const call of calls) await caller.query(call, [[], "{}"]);
      const rows = await insertRunning("order", 200, fresh);
      // Rewrite the rows from the highest id down, changing an indexed column
      // (no HOT update): physical order becomes the reverse of id order.
      // Raw SQL on purpose: the point is the row layout, not a job's state.
      for (const r of [...rows].reverse()) await fresh.query("UPDATE jobwire.jobs SET run_at = run_at + interval '1 ms' WHERE id = $1", [r.id]);
      const ids = rows.map((r) => r.id);
      const pairs = JSON.stringify(Object.fromEntries(rows.map((r) => [r.id, r.lease_token])));
      const lowest = ids[0]!;
      const pid = (await caller.query("SELECT pg_backend_pid() AS p")).rows[0].p;
      for (const call of calls) {
        await holder.query("BEGIN");
        await holder.query("SELECT 1 FROM jobwire.jobs WHERE id = $1 FOR UPDATE", [lowest]);
        await caller.query("BEGIN");
        const pending = caller.query(call, [ids, pairs]);
        // Wait until the call is blocked on a lock (a signal, not a sleep).
        for (;;) {
          const { rows: w } = await fresh.query("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", [pid]);
          if (w[0]?.wait_event_type === "Lock") break;
          await new Promise((r) => setImmediate(r));
        }
        // Locking in id order, the call waits on the lowest id before it has
        // locked anything else: every other row is still free.
        const { rows: free } = await fresh.query(
          "SELECT count(*)::int AS n FROM (SELECT id FROM jobwire.jobs WHERE id = ANY ($1) AND id <> $2 FOR UPDATE SKIP LOCKED) f",
          [ids, lowest],
        );
        expect(free[0].n, call).toBe(ids.length - 1);
        await holder.query("ROLLBACK");
        await pending;
        await caller.query("ROLLBACK");
      }
    } finally {
      holder.release();
      caller.release();
      await fresh.end();
    }
  });
});

describe("release", () => {
  it("ends a job cancelled while its lease was claimed but not yet sent, instead of running it", async () => {
    // Put back as available, the job kept cancel_requested, the next claim
    // cleared it, and the job ran as if never cancelled.
    const store = new JobStore(pool);
    const [made] = await makeJobs(pool, 1, { queue: "release-cancel", state: "available", maxAttempts: 3 });
    const { jobs } = await store.claim(["release-cancel"], 1, "w", null, 30_000);
    expect(jobs.map((c) => c.job.id)).toEqual([made!.id]);
    await store.cancel(made!.id);
    await store.release([{ id: made!.id, token: jobs[0]!.token }]);
    const { rows } = await pool.query("SELECT state::text, attempt, finished_at IS NOT NULL AS finished FROM jobwire.jobs WHERE id = $1", [made!.id]);
    expect(rows[0]).toEqual({ state: "cancelled", attempt: 0, finished: true });
    expect((await store.claim(["release-cancel"], 1, "w", null, 30_000)).jobs).toEqual([]);
  });
});

describe("quarantine", () => {
  it("keeps the error history bounded, as every failure does", async () => {
    const store = new JobStore(pool);
    const errors = Array.from({ length: 40 }, (_, i) => ({ attempt: i + 1, message: `failure ${i + 1}` }));
    const [job] = await makeJobs(pool, 1, { queue: "quarantine", state: "running", attempt: 41, maxAttempts: 100, errors });
    const dead = await store.quarantine(job!.id, "its retry policy broke the failure statement", null);
    expect(dead?.state).toBe("dead");
    const { rows } = await pool.query("SELECT jsonb_array_length(errors) AS n, errors_dropped, errors -> -1 ->> 'message' AS last FROM jobwire.jobs WHERE id = $1", [job!.id]);
    // push_error.sql: the first 3 and the last 20 entries.
    expect(rows[0]).toEqual({ n: 23, errors_dropped: 18, last: "its retry policy broke the failure statement" });
  });
});

describe("leased-row statements pair tokens with their own rows", () => {
  it("when one call holds a stale and a current token of the same job", async () => {
    const store = new JobStore(pool);
    const rows = await insertRunning("pairs", 3);
    const [a, b, c] = rows.map((r) => ({ id: r.id, token: r.lease_token }));
    const stale = { id: a!.id, token: "00000000-0000-4000-8000-000000000000" };
    // b's token under a's id, and a's id written with leading zeros.
    const crossed = { id: a!.id, token: b!.token };
    const padded = { id: `00${c!.id}`, token: c!.token };
    // c twice in one call, written two ways: a stale token and the current one.
    const cStale = { id: c!.id, token: "00000000-0000-4000-8000-000000000001" };
    const beat = await store.heartbeat([padded, stale, a!, crossed, cStale], null);
    expect(beat.map((x) => x !== null)).toEqual([true, false, true, false, false]);
    const { acked } = await store.ack([crossed, a!, stale, b!, padded]);
    expect(acked).toEqual([false, true, false, true, true]);
    const { rows: states } = await pool.query("SELECT state::text AS s FROM jobwire.jobs WHERE queue = 'pairs'");
    expect(states.map((r) => r.s)).toEqual(["completed", "completed", "completed"]);
  });

  it("never lets two leases' tokens, swapped, complete each other's jobs", async () => {
    // Ack(["A.<uuid of B>", "B.<uuid of A>"]) completed both jobs when ids
    // and tokens were matched as two separate lists.
    const store = new JobStore(pool);
    const [a, b] = (await insertRunning("swapped", 2)).map((r) => ({ id: r.id, token: r.lease_token }));
    const swapped = [
      { id: a!.id, token: b!.token },
      { id: b!.id, token: a!.token },
    ];
    expect(await store.heartbeat(swapped, null)).toEqual([null, null]);
    expect((await store.ack(swapped)).acked).toEqual([false, false]);
    expect(await store.release(swapped)).toEqual([]);
    const { rows: states } = await pool.query("SELECT state::text AS s FROM jobwire.jobs WHERE queue = 'swapped'");
    expect(states.map((r) => r.s)).toEqual(["running", "running"]);
    expect((await store.ack([a!, b!])).acked).toEqual([true, true]);
  });

  it("by primary key, with no join, however few jobs the statistics say are running", async () => {
    // A join to unnest(ids, tokens) planned as a nested loop over both lists
    // once ANALYZE had seen no running jobs: O(tokens^2), 130-400 ms per ack.
    await makeJobs(pool, 5000, { queue: "plan", state: "completed", maxAttempts: 1 });
    await pool.query("ANALYZE jobwire.jobs");
    const rows = await insertRunning("plan", 300);
    const ids = rows.map((r) => r.id);
    const pairs = JSON.stringify(Object.fromEntries(rows.map((r) => [r.id, r.lease_token])));
    // auto_explain shows the plan of the UPDATE inside each function.
    const client = await pool.connect();
    let plans: string[] = [];
    try {
      plans = await explainNestedUpdates(client);
      for (const [call, rows] of [
        ["SELECT * FROM jobwire.heartbeat_leases($1, $2, NULL)", 300],
        ["SELECT * FROM jobwire.release_leases($1, $2)", 300],
        // Keeping completed jobs (one UPDATE), and deleting them (rows locked
        // first, then DELETE); the ack returns the leases it could not ack
        // (none), and one row per queue with how many it acked.
        ["SELECT * FROM jobwire.ack_leases($1, $2, 3600000)", 1],
        ["SELECT * FROM jobwire.ack_leases($1, $2, 0)", 1],
      ] as const) {
        await client.query("BEGIN");
        const { rowCount } = await client.query(call, [ids, pairs]);
        await client.query("ROLLBACK");
        expect(rowCount, call).toBe(rows);
      }
    } finally {
      await client.query("RESET ALL");
      client.release();
    }
    expect(plans).toHaveLength(4);
    for (const plan of plans) {
      // Rows locked first (LockRows), then found again by id; every read of
      // jobs is a primary-key probe, and nothing is joined to the input lists.
      expect(plan).toMatch(/LockRows/);
      const scans = plan.split("\n").filter((l) => /Scan.* on jobs /.test(l));
      expect(scans.length, plan).toBeGreaterThan(0);
      for (const scan of scans) expect(scan.trim(), plan).toMatch(/^-> +Index Scan using jobs_pkey /);
      expect(plan).not.toMatch(/Function Scan|Hash Join|Merge Join|Seq Scan|Bitmap/);
    }
  });
});

describe("the claim's plan, made once per session", () => {
  it("reads the claim index, then the locked rows by address, whatever the table looked like when it was planned", async () => {
    for (const history of [0, 30_000]) {
      // A fresh database: an empty jobs table that ANALYZE has never seen, or a large history.
      const db = new pg.Pool({ connectionString: await createTestDatabase(), max: 1 });
      const client = await db.connect();
      let plans: string[] = [];
      try {
        if (history > 0) {
          await makeJobs(client, history, { queue: "c", state: "completed", maxAttempts: 1 });
          await client.query("ANALYZE jobwire.jobs");
        }
        const addAvailable = (n: number) => makeJobs(client, n, { queue: "c", state: "available", maxAttempts: 1 });
        plans = await explainNestedUpdates(client);
        const claim = () => client.query("SELECT * FROM jobwire.claim_jobs('{c}', 10, NULL, 30000, 'w')");
        // Planned now, on this table; then the backlog grows, with no ANALYZE, and the plan stays.
        await addAvailable(5);
        expect((await claim()).rowCount).toBe(5);
        await addAvailable(20_000);
        expect((await claim()).rowCount).toBe(10);
      } finally {
        client.release();
        await db.end();
      }
      expect(plans, `history ${history}`).toHaveLength(2);
      for (const plan of plans) {
        expect(plan, `history ${history}`).toMatch(/Index Scan using jobs_claim_idx/);
        expect(plan, `history ${history}`).toMatch(/Tid Scan on jobs/);
        expect(plan, `history ${history}`).not.toMatch(/Seq Scan on jobs|Bitmap/);
        // The claim index is read for its first rows only, not in full.
        const read = /Index Scan using jobs_claim_idx on jobs \S+\s+\(cost=[^)]*\)\s+\(actual [^)]*rows=([\d.]+)/.exec(plan);
        expect(Number(read?.[1]), plan).toBeLessThanOrEqual(10);
      }
    }
  });
});

describe("indexes", () => {
  it("the claim reads jobs_claim_idx, whatever the size of the history", async () => {
    await makeJobs(pool, 20_000, { queue: "hist", state: "completed", maxAttempts: 1 });
    await makeJobs(pool, 100, { queue: "hist", state: "available", maxAttempts: 1 });
    await pool.query("ANALYZE jobwire.jobs");
    const { rows } = await pool.query(`EXPLAIN SELECT id FROM jobwire.jobs
                                       WHERE state = 'available' AND concurrency_key IS NULL AND ordering_key IS NULL AND queue = 'hist'
                                       ORDER BY priority DESC, queued_at, id LIMIT 10 FOR UPDATE SKIP LOCKED`);
    const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
    expect(plan).toContain("jobs_claim_idx");
    expect(plan).not.toMatch(/Sort|Seq Scan/);
  });
});

describe("enqueue", () => {
  it("stores awkward text, JSON and bytes exactly, through the array literals", async () => {
    const store = new JobStore(pool);
    const awkward = ['a"b\\c{},NULL', "NULL", "", " lead and trail ", "ключ ✓ \u{1F600}", "\\\\x00", '"'];
    const payload = new Uint8Array(256).map((_, i) => i);
    const runAt = new Date("2030-01-02T03:04:05.678Z");
    const jobs = awkward.map((t, i) => ({
      queue: "awkward",
      type: t === "" ? "empty-type" : t,
      payload: i === 0 ? payload : new Uint8Array(0),
      contentType: t,
      runAt: i === 1 ? runAt : null,
      delayMs: 0,
      priority: i === 0 ? 0 : -i,
      maxAttempts: i === 2 ? null : i + 1,
      leaseMs: i === 3 ? 1234 : null,
      retry: i === 4 ? { initialMs: 5, jitter: 0 } : null,
      idempotencyKey: i === 5 ? t : null,
      idempotencyTtlMs: 60_000,
      headers: { [t]: t, plain: "x" },
      concurrencyKey: null,
      orderingKey: null,
    }));
    const results = await store.enqueue(jobs);
    const { rows } = await pool.query(
      `SELECT id::text, type, payload, content_type, run_at, priority, max_attempts, lease_ms, retry, idempotency_key, headers
       FROM jobwire.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [results.map((r) => r.jobId)],
    );
    expect(rows).toHaveLength(jobs.length);
    rows.forEach((r, i) => {
      const j = jobs[i]!;
      expect(r.type).toBe(j.type);
      expect(new Uint8Array(r.payload)).toEqual(j.payload);
      expect(r.content_type).toBe(j.contentType);
      if (j.runAt) expect(r.run_at.getTime()).toBe(runAt.getTime());
      expect(r.priority).toBe(j.priority);
      expect(r.max_attempts).toBe(j.maxAttempts ?? 25);
      expect(r.lease_ms).toBe(j.leaseMs);
      expect(r.retry).toEqual(j.retry ? { initial_ms: 5, jitter: 0 } : null);
      expect(r.idempotency_key).toBe(j.idempotencyKey);
      expect(r.headers).toEqual(j.headers);
    });
  });
});
