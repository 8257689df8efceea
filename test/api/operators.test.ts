import { startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, stateOf, uniqueQueue } from "./helpers.js";

/**
 * What operators see (issue 13): /metrics through prom-client, with
 * histograms, counts from every enqueue path, series that stay at zero, and
 * an answer while the database is down; ListWorkers across replicas;
 * GetQueueHistory.
 */
let tb: TestBroker;
beforeAll(async () => {
  tb = await startTestBroker();
});
afterAll(async () => {
  await tb.stop();
});

async function metrics(broker = tb): Promise<string> {
  const res = await fetch(`${broker.url}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

/** The value of one series, or undefined. */
function value(body: string, series: string): number | undefined {
  const line = body.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("/metrics", () => {
  it("has histograms of wait, run and end-to-end time per queue, and RPC durations by method and code", async () => {
    const queue = uniqueQueue("hist");
    await enqueue(tb, { queue }, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 2 });
    const [a, b] = await s.take(2);
    await tb.workers.ack({ leaseTokens: [a!.leaseToken] });
    await tb.workers.nack({ leaseToken: b!.leaseToken, error: "x", permanent: true });
    await tb.jobs.getJob({ id: "1" }).catch(() => {}); // a NOT_FOUND, or a found job: either is a code
    s.kill();
    const body = await metrics();
    expect(value(body, `jobwire_job_wait_seconds_count{queue="${queue}"}`)).toBe(2);
    expect(value(body, `jobwire_job_wait_seconds_bucket{queue="${queue}",le="+Inf"}`)).toBe(2);
    expect(value(body, `jobwire_job_run_seconds_count{queue="${queue}"}`)).toBe(2);
    expect(value(body, `jobwire_job_end_to_end_seconds_count{queue="${queue}"}`)).toBe(1);
    expect(body).toContain("# TYPE jobwire_job_run_seconds histogram");
    expect(body).toMatch(/jobwire_rpc_duration_seconds_count\{method="Ack",code="ok"\} \d+/);
    expect(body).toMatch(/jobwire_rpc_duration_seconds_bucket\{le="[0-9.]+",method="Enqueue",code="ok"\} \d+/);
    expect(value(body, `jobwire_jobs_acked_total{queue="${queue}"}`)).toBe(1);
    // prom-client's default process and Node.js metrics.
    expect(body).toContain("process_cpu_user_seconds_total");
    expect(body).toContain("nodejs_eventloop_lag_seconds");
  });

  it("counts jobs enqueued by SQL and by cron, not only by gRPC", async () => {
    const queue = uniqueQueue("sqlcount");
    await enqueue(tb, { queue });
    await tb.db.query("SELECT jobwire.enqueue($1, 't')", [queue]);
    await tb.db.query("SELECT jobwire.enqueue($1, 't'), jobwire.enqueue($1, 't')", [queue]);
    await tb.admin.setSchedule({ schedule: { name: `${queue}-cron`, cron: "* * * * *", job: { queue, type: "t" } } });
    // Fire it now rather than at the next minute.
    await tb.db.query("UPDATE jobwire.schedules SET next_run_at = now() WHERE name = $1", [`${queue}-cron`]);
    await tb.app.loops.cron.runOnce();
    expect(value(await metrics(), `jobwire_jobs_enqueued_total{queue="${queue}"}`)).toBe(5);
    // Folding the deltas into totals changes nothing the scrape reports.
    await tb.app.loops.counters.runOnce();
    expect(value(await metrics(), `jobwire_jobs_enqueued_total{queue="${queue}"}`)).toBe(5);
  });

  it("keeps every state's series at 0 once a queue has been seen, and shows paused queues and workers", async () => {
    const queue = uniqueQueue("zeros");
    const [id] = await enqueue(tb, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 1 });
    const [l] = await s.take(1);
    await tb.workers.nack({ leaseToken: l!.leaseToken, error: "x", permanent: true });
    let body = await metrics();
    expect(value(body, `jobwire_queue_jobs{queue="${queue}",state="dead"}`)).toBe(1);
    await tb.admin.replay({ jobIds: [id!] });
    s.credit(1);
    const [again] = await s.take(1);
    await tb.workers.ack({ leaseTokens: [again!.leaseToken] });
    expect(await stateOf(tb, id!)).toMatch(/completed|missing/);
    body = await metrics();
    for (const state of ["scheduled", "available", "running", "retryable", "dead"]) {
      expect(value(body, `jobwire_queue_jobs{queue="${queue}",state="${state}"}`), state).toBe(0);
    }
    expect(value(body, `jobwire_queue_workers{queue="${queue}"}`)).toBe(1);
    await tb.admin.pauseQueue({ queue });
    expect(value(await metrics(), `jobwire_queue_paused{queue="${queue}"}`)).toBe(1);
    s.kill();
  });

  it("reads completed and failed totals from the database, and starts this replica's counters at 0 for every queue seen", async () => {
    const queue = uniqueQueue("totals");
    await enqueue(tb, { queue }, { queue });
    let body = await metrics();
    // Nothing leased, acked or failed yet: the series are there, at 0.
    for (const series of [
      `jobwire_jobs_leased_total{queue="${queue}"}`,
      `jobwire_jobs_acked_total{queue="${queue}"}`,
      `jobwire_jobs_failed_total{queue="${queue}",outcome="dead",cause="nack"}`,
      `jobwire_queue_completed_total{queue="${queue}"}`,
      `jobwire_queue_failed_total{queue="${queue}"}`,
    ]) {
      expect(value(body, series), series).toBe(0);
    }
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 2 });
    const [a, b] = await s.take(2);
    await tb.workers.ack({ leaseTokens: [a!.leaseToken] });
    await tb.workers.nack({ leaseToken: b!.leaseToken, error: "x", permanent: true });
    body = await metrics();
    expect(value(body, `jobwire_queue_completed_total{queue="${queue}"}`)).toBe(1);
    expect(value(body, `jobwire_queue_failed_total{queue="${queue}"}`)).toBe(1);
    // Another replica on the same database reports the same totals, having acked nothing itself.
    const other = await startTestBroker({ databaseUrl: tb.databaseUrl });
    try {
      const theirs = await metrics(other);
      expect(value(theirs, `jobwire_queue_completed_total{queue="${queue}"}`)).toBe(1);
      expect(value(theirs, `jobwire_jobs_acked_total{queue="${queue}"}`)).toBe(0);
    } finally {
      await other.stop();
    }
    s.kill();
  });

  it("still answers with the database down: process metrics, and jobwire_database_up 0", async () => {
    const other = await startTestBroker();
    try {
      expect(value(await metrics(other), "jobwire_database_up")).toBe(1);
      // Cut this broker's database off: every connection to it is refused.
      const db = new URL(other.databaseUrl).pathname.slice(1);
      const admin = new pg.Client({ connectionString: process.env.JOBWIRE_TEST_ADMIN_URL });
      await admin.connect();
      try {
        await admin.query(`ALTER DATABASE ${db} WITH ALLOW_CONNECTIONS false`);
        await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [db]);
        const body = await metrics(other);
        expect(value(body, "jobwire_database_up")).toBe(0);
        expect(body).toContain("process_resident_memory_bytes");
        expect((await fetch(`${other.url}/readyz`)).status).toBe(503);
        await admin.query(`ALTER DATABASE ${db} WITH ALLOW_CONNECTIONS true`);
      } finally {
        await admin.end();
      }
    } finally {
      await other.stop();
    }
  });
});

describe("ListWorkers", () => {
  it("lists the Lease streams of every replica, with credit and jobs held", async () => {
    const other = await startTestBroker({}, { databaseUrl: tb.databaseUrl });
    try {
      const queue = uniqueQueue("workers");
      await enqueue(tb, { queue }, { queue });
      const here = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 5, workerId: "here" });
      const there = new TestLeaseStream(other.workers, { queues: [queue, "elsewhere"], maxInFlight: 3, workerId: "there" });
      await here.take(2);
      // The other replica's presence loop reports on its own timer; run it now.
      await other.app.loops.presence.runOnce();
      const { workers } = await tb.admin.listWorkers({ queue });
      const byId = new Map(workers.map((w) => [w.workerId, w]));
      expect(byId.get("here")).toMatchObject({ queues: [queue], maxInFlight: 5, credit: 3, jobsHeld: 2 });
      expect(byId.get("there")).toMatchObject({ queues: [queue, "elsewhere"], maxInFlight: 3 });
      expect(byId.get("here")!.brokerId).not.toBe(byId.get("there")!.brokerId);
      expect((await tb.admin.listWorkers({ queue: "elsewhere" })).workers.map((w) => w.workerId)).toEqual(["there"]);
      here.kill();
      there.kill();
    } finally {
      await other.stop();
    }
  });
});

describe("GetQueueHistory", () => {
  it("samples backlog and the interval's enqueued, completed and failed counts", async () => {
    const queue = uniqueQueue("history");
    const sampler = tb.app.loops.sampler;
    await sampler.runOnce(); // the baseline
    await enqueue(tb, { queue }, { queue }, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 2 });
    const [a, b] = await s.take(2);
    await tb.workers.ack({ leaseTokens: [a!.leaseToken] });
    await tb.workers.nack({ leaseToken: b!.leaseToken, error: "x", retryAfter: { seconds: 600n, nanos: 0 } });
    await sampler.runOnce();
    const h = await tb.admin.getQueueHistory({ queue });
    expect(h.interval!.seconds).toBe(10n);
    const last = h.samples.at(-1)!;
    // One acked, one waiting out its retry, one still waiting for credit.
    expect(last).toMatchObject({ queue, enqueued: 3n, completed: 1n, failed: 1n, available: 1n, waiting: 1n, running: 0n });
    s.kill();
  });
});
