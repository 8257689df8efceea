import type { QueueSettings } from "../model.js";
import type pg from "pg";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { NewJob } from "../model.js";
import { createTestDatabase, makeJobs } from "../testing/index.js";
import { createPool } from "./db.js";
import { JobStore } from "./jobs.js";
import { ScheduleStore } from "./schedules.js";

/** Every queue setting unset. */
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

/**
 * The broker's statements are named, so Postgres prepares them once per
 * connection and, from the sixth execution, may switch one for good to its
 * generic plan: a plan made without the parameters' values. Every named
 * statement is run here against a table with a large history, and its
 * generic plan must still reach the rows through an index.
 */
let pool: pg.Pool;
const connectionErrors: Error[] = [];
beforeAll(async () => {
  // One connection, so that every statement is prepared on it, and only
  // generic plans on it.
  pool = createPool(await createTestDatabase(), 1, (err) => connectionErrors.push(err));
  pool.on("connect", (c) => {
    c.query("SET plan_cache_mode = force_generic_plan").catch((err: Error) => connectionErrors.push(err));
  });
});
afterAll(async () => {
  await pool.end();
});

function newJob(queue: string, idempotencyKey: string | null = null): NewJob {
  return {
    queue,
    type: "t",
    payload: Buffer.from("{}"),
    contentType: "application/json",
    priority: 0,
    runAt: null,
    delayMs: 0,
    maxAttempts: 3,
    leaseMs: null,
    headers: {},
    idempotencyKey,
    idempotencyTtlMs: 60_000,
    retry: null,
    concurrencyKey: null,
    orderingKey: null,
  };
}

/** Statements that read every row by design: the dashboard's counts per state, the completed history included. */
const WHOLE_TABLE = new Set(["jobwire_queue_counts"]);

/**
 * The index each of these must start from: a scan of the primary key would
 * read the whole history just as well. (The claim is a function whose plan
 * store.spec checks.)
 */
const START_FROM: Record<string, RegExp> = {
  jobwire_reap: /Index Scan (using|on) jobs_running_idx/,
  jobwire_promote: /Index Scan (using|on) jobs_due_idx/,
  jobwire_select_replayable: /Index Scan (using|on) jobs_finished_idx/,
  jobwire_metric_counts: /jobs_due_idx[\s\S]*jobs_claim_idx[\s\S]*jobs_running_idx[\s\S]*jobs_finished_idx/,
};

it("makes generic plans that reach their rows through an index, for every named statement", async () => {
  // A history that makes a scan of the whole table the costly mistake.
  await makeJobs(pool, 60_000, { queue: (i) => `h${(i + 1) % 4}`, state: "completed", maxAttempts: 3 });
  await makeJobs(pool, 200, { queue: "p", state: "dead", maxAttempts: 3, errors: [{ attempt: 1, message: "boom" }] });
  await makeJobs(pool, 2000, { queue: "p", state: "available", maxAttempts: 3 });
  await pool.query("ANALYZE jobwire.jobs");

  const store = new JobStore(pool);
  const schedules = new ScheduleStore(pool);
  // Every store operation the broker and its loops run.
  await store.enqueue([newJob("p")]);
  await store.enqueue([newJob("p", "k1"), newJob("p", "k2")]);
  await store.enqueue([newJob("p", "k1")]);
  const { jobs: leased } = await store.claim(["p", "h1"], 5, "w", null, 30_000);
  expect(leased).toHaveLength(5);
  const refs = leased.map((l) => ({ id: l.job.id, token: l.token }));
  expect((await store.ack(refs.slice(0, 2))).acked).toEqual([true, true]);
  expect((await store.heartbeat(refs.slice(2), null)).every((r) => r !== null)).toBe(true);
  expect(await store.nack(refs[2]!, "boom", false, null)).not.toBeNull();
  expect(await store.release(refs.slice(3))).toEqual(["p"]);
  await store.reapExpired(100);
  await store.promoteDue(100);
  await store.msUntilNextDue();
  await store.notify("p");
  await store.get(refs[0]!.id);
  await store.cancel(refs[0]!.id);
  const dead = await store.selectReplayable({ queue: "p", type: "t", errorContains: "boom", finishedAfter: null, finishedBefore: null }, ["dead"], "0", 10);
  expect(dead).toHaveLength(10);
  await store.filterIds(dead, ["dead"]);
  await store.replayIds(dead.slice(0, 1), ["dead"]);
  await store.list({ queue: "p", type: null, errorContains: "boom", states: ["dead"], beforeId: null, limit: 10 });
  await store.stats(["p"]);
  await store.metricsSnapshot();
  await store.setQueueConfig({ queue: "p", values: { ...unset, maxAttempts: 5 }, fields: ["maxAttempts"] });
  await store.getQueueConfig("p");
  await store.setPaused("p", false);
  await schedules.upsert({ name: "s", cron: "* * * * *", template: newJob("p"), paused: false, nextRunAt: new Date(0) });
  await schedules.fireDue(10, () => new Date(Date.now() + 60_000));
  await schedules.list();
  await schedules.now();
  await schedules.msUntilNext();
  await schedules.delete("s");

  const { rows: mode } = await pool.query("SHOW plan_cache_mode");
  expect(mode[0].plan_cache_mode).toBe("force_generic_plan");
  const { rows: prepared } = await pool.query<{ name: string; types: string[]; custom_plans: string }>(
    "SELECT name, parameter_types::text[] AS types, custom_plans FROM pg_prepared_statements ORDER BY name",
  );
  const names = prepared.map((p) => p.name);
  // The hot paths are among them, so this cannot pass by checking nothing.
  for (const hot of ["jobwire_insert_jobs", "jobwire_insert_keyed_jobs", "jobwire_claim", "jobwire_ack", "jobwire_heartbeat", "jobwire_nack", "jobwire_release", "jobwire_reap", "jobwire_promote", "jobwire_metric_counts", "jobwire_select_replayable", "jobwire_due_schedules"]) {
    expect(names).toContain(hot);
  }

  for (const p of prepared) {
    expect(Number(p.custom_plans), p.name).toBe(0);
    const args = p.types.length > 0 ? `(${p.types.map(() => "NULL").join(", ")})` : "";
    const { rows } = await pool.query(`EXPLAIN (COSTS OFF) EXECUTE ${p.name}${args}`);
    const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
    if (WHOLE_TABLE.has(p.name)) continue;
    expect(plan, `${p.name}:\n${plan}`).not.toMatch(/Seq Scan on jobs/);
    if (START_FROM[p.name]) expect(plan, `${p.name}:\n${plan}`).toMatch(START_FROM[p.name]!);
  }
  expect(connectionErrors).toEqual([]);
});
