import type { QueueSettings } from "../model.js";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, makeJob, makeJobs } from "../testing/index.js";
import { silentLogger } from "../log.js";
import { Pruner } from "../maintenance/pruner.js";
import { JobStore } from "./jobs.js";

const unset: QueueSettings = {
  retry: null,
  maxAttempts: null,
  leaseMs: null,
  completedRetentionMs: null,
  maxRunning: null,
  maxRunningPerKey: null,
  rateLimit: null,
  rateLimitPerKey: null,
};

/** Retention of completed jobs (migrations/005_retention.sql): the ack's delete-or-keep, and the pruner. */
let pool: pg.Pool;
beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await createTestDatabase(), max: 4 });
});
afterAll(async () => {
  await pool.end();
});

const HOUR = 3600_000;
const DAY = 24 * HOUR;

/** n running jobs in `queue` (with an idempotency key expiring in `keyTtlMs` when given). */
async function running(queue: string, n: number, keyTtlMs?: number): Promise<{ id: string; token: string }[]> {
  const made = await makeJobs(pool, n, {
    queue,
    state: "running",
    maxAttempts: 5,
    leasedForMs: 60_000,
    ...(keyTtlMs === undefined ? {} : { idempotencyKey: (i) => `k${i + 1}-${queue}-${keyTtlMs / 1000}`, idempotencyTtlMs: keyTtlMs }),
  });
  return made.map((m) => ({ id: m.id, token: m.token! }));
}

async function rowsOf(ids: string[]): Promise<{ id: string; state: string; prune_in_h: number | null }[]> {
  const { rows } = await pool.query(
    `SELECT id::text, state::text, extract(epoch FROM prune_at - now()) / 3600 AS prune_in_h
     FROM jobwire.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
    [ids],
  );
  return rows.map((r) => ({ ...r, prune_in_h: r.prune_in_h === null ? null : Number(r.prune_in_h) }));
}

async function setRetention(queue: string, ms: number | null): Promise<void> {
  await new JobStore(pool).setQueueConfig({ queue, values: { ...unset, completedRetentionMs: ms }, fields: ["completedRetentionMs"] });
}

describe("ack with retention", () => {
  it("keeps completed jobs for the default retention, with prune_at set", async () => {
    const store = new JobStore(pool, { completedRetentionMs: 2 * HOUR });
    const jobs = await running("keep", 3);
    expect((await store.ack(jobs)).acked).toEqual([true, true, true]);
    const rows = await rowsOf(jobs.map((j) => j.id));
    expect(rows.map((r) => r.state)).toEqual(["completed", "completed", "completed"]);
    for (const r of rows) expect(r.prune_in_h).toBeCloseTo(2, 1);
  });

  it("deletes acked jobs when the retention is zero, and refuses stale tokens all the same", async () => {
    const store = new JobStore(pool, { completedRetentionMs: 0 });
    const jobs = await running("drop", 4);
    const stale = { id: jobs[3]!.id, token: "00000000-0000-4000-8000-000000000000" };
    expect((await store.ack([jobs[0]!, jobs[1]!, jobs[2]!, stale])).acked).toEqual([true, true, true, false]);
    expect((await rowsOf(jobs.map((j) => j.id))).map((r) => [r.id, r.state])).toEqual([[jobs[3]!.id, "running"]]);
    // A repeated ack of a deleted job is a lost lease, not an error.
    expect((await store.ack([jobs[0]!])).acked).toEqual([false]);
  });

  it("lets a queue's own retention win over the broker default, either way", async () => {
    await setRetention("q-zero", 0);
    await setRetention("q-hour", HOUR);
    const keeping = new JobStore(pool, { completedRetentionMs: 5 * HOUR });
    const dropping = new JobStore(pool, { completedRetentionMs: 0 });
    const [z1, h1, d1] = [await running("q-zero", 1), await running("q-hour", 1), await running("q-default", 1)];
    expect((await keeping.ack([...z1, ...h1, ...d1])).acked).toEqual([true, true, true]);
    expect(await rowsOf([z1[0]!.id])).toEqual([]);
    expect((await rowsOf([h1[0]!.id]))[0]!.prune_in_h).toBeCloseTo(1, 1);
    expect((await rowsOf([d1[0]!.id]))[0]!.prune_in_h).toBeCloseTo(5, 1);

    const [z2, h2, d2] = [await running("q-zero", 1), await running("q-hour", 1), await running("q-default", 1)];
    expect((await dropping.ack([...z2, ...h2, ...d2])).acked).toEqual([true, true, true]);
    expect(await rowsOf([z2[0]!.id, d2[0]!.id])).toEqual([]);
    expect((await rowsOf([h2[0]!.id]))[0]!.state).toBe("completed");
  });

  it("keeps a job whose idempotency key is live until the key expires, so no duplicate gets in", async () => {
    const store = new JobStore(pool, { completedRetentionMs: 0 });
    const keyed = await running("keyed", 2, 3 * HOUR);
    const expired = await running("keyed", 1, -60_000);
    const plain = await running("keyed", 1);
    expect((await store.ack([...keyed, ...expired, ...plain])).acked).toEqual([true, true, true, true]);
    const rows = await rowsOf([...keyed, ...expired, ...plain].map((j) => j.id));
    expect(rows.map((r) => r.id)).toEqual(keyed.map((j) => j.id));
    for (const r of rows) {
      expect(r.state).toBe("completed");
      expect(r.prune_in_h).toBeCloseTo(3, 1);
    }
    // The key still deduplicates.
    const again = await store.enqueue([
      {
        queue: "keyed", type: "t", payload: new Uint8Array(0), contentType: "", runAt: null, delayMs: 0, priority: 0,
        maxAttempts: null, leaseMs: null, retry: null, idempotencyKey: "k1-keyed-10800", idempotencyTtlMs: HOUR, headers: {},
        concurrencyKey: null, orderingKey: null,
      },
    ]);
    expect(again).toEqual([{ jobId: keyed[0]!.id, duplicate: true }]);
  });

  it("never deadlocks with heartbeats when one ack deletes some rows and keeps others", async () => {
    const store = new JobStore(pool, { completedRetentionMs: 0 });
    await setRetention("mixed-keep", HOUR);
    const deadlocks = async () =>
      Number((await pool.query("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")).rows[0].deadlocks);
    const before = await deadlocks();
    for (let round = 0; round < 6; round++) {
      // Interleaved ids: every other row is kept, the rest are deleted.
      const a = await running("mixed-drop", 60);
      const b = await running("mixed-keep", 60);
      const all = a.flatMap((x, i) => [x, b[i]!]);
      const [acked] = await Promise.all([
        store.ack([...all].reverse()),
        store.heartbeat(all, null),
        store.heartbeat([...all].reverse(), 30_000),
      ]);
      expect(acked.acked.every(Boolean)).toBe(true);
      expect(await rowsOf(a.map((j) => j.id))).toEqual([]);
      expect((await rowsOf(b.map((j) => j.id))).every((r) => r.state === "completed")).toBe(true);
    }
    expect(await deadlocks()).toBe(before);
  });
});

describe("pruneCompleted", () => {
  it("deletes completed jobs past their prune_at, oldest first, and nothing else", async () => {
    const store = new JobStore(pool);
    await pool.query("DELETE FROM jobwire.jobs");
    const finished = { queue: "prune", maxAttempts: 5, finishedAgoMs: 2 * DAY } as const;
    const rows = [
      await makeJob(pool, { ...finished, state: "completed", pruneInMs: -3 * HOUR }),
      await makeJob(pool, { ...finished, state: "completed", pruneInMs: -1 * HOUR }),
      await makeJob(pool, { ...finished, state: "completed", pruneInMs: -2 * HOUR }),
      await makeJob(pool, { ...finished, state: "completed", pruneInMs: HOUR }),
      await makeJob(pool, { ...finished, state: "completed" }),
      await makeJob(pool, { ...finished, state: "dead" }),
      await makeJob(pool, { ...finished, state: "cancelled" }),
    ];
    // Raw SQL on purpose: rows no broker statement leaves (a completed job
    // with no prune_at, a dead one with a past prune_at), which the pruner must skip.
    await pool.query("UPDATE jobwire.jobs SET prune_at = NULL WHERE id = $1", [rows[4]!.id]);
    await pool.query("UPDATE jobwire.jobs SET prune_at = now() - interval '1 hour' WHERE id = $1", [rows[5]!.id]);
    expect(await store.pruneCompleted(2)).toBe(2);
    expect(await store.pruneCompleted(2)).toBe(1);
    expect(await store.pruneCompleted(2)).toBe(0);
    const left = await pool.query<{ id: string }>("SELECT id::text FROM jobwire.jobs ORDER BY id");
    // Kept: not yet due, no prune_at (written by hand, outside an ack), dead, cancelled.
    expect(left.rows.map((r) => r.id)).toEqual([rows[3]!.id, rows[4]!.id, rows[5]!.id, rows[6]!.id]);
  });
});

describe("Pruner.runOnce", () => {
  it("goes again at once after a full batch, and waits its interval once the backlog is gone", async () => {
    await pool.query("DELETE FROM jobwire.jobs");
    await makeJobs(pool, 3, { queue: "loop", state: "completed", maxAttempts: 5, finishedAgoMs: HOUR, pruneInMs: -1000 });
    const pruned: number[] = [];
    const pruner = new Pruner(new JobStore(pool), { intervalMs: 5000, batch: 2 }, silentLogger, (n) => pruned.push(n));
    expect(await pruner.runOnce()).toBe(0);
    expect(await pruner.runOnce()).toBe(5000);
    expect(await pruner.runOnce()).toBe(5000);
    expect(pruned).toEqual([2, 1]);
  });
});
