import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { eventually, startTestBroker, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { expectCode, json, uniqueQueue } from "./helpers.js";

let tb: TestBroker;
beforeAll(async () => {
  // The cron loop is driven by hand (runOnce) unless a test says otherwise.
  tb = await startTestBroker({ schedulerIntervalMs: 600_000 });
});
afterAll(async () => {
  await tb.stop();
});

async function makeDue(name: string, ago = "1 second"): Promise<Date> {
  const { rows } = await tb.db.query(`UPDATE jobwire.schedules SET next_run_at = date_trunc('minute', now() - interval '${ago}') WHERE name = $1 RETURNING next_run_at`, [name]);
  return rows[0].next_run_at;
}

async function jobsOn(queue: string): Promise<{ id: string; idempotency_key: string; payload: Buffer }[]> {
  const { rows } = await tb.db.query("SELECT id::text, idempotency_key, payload FROM jobwire.jobs WHERE queue = $1 ORDER BY id", [queue]);
  return rows;
}

describe("schedules", () => {
  it("saves a schedule with its next fire time, and lists it", async () => {
    const queue = uniqueQueue();
    const { schedule } = await tb.admin.setSchedule({ schedule: { name: `nightly-${queue}`, cron: "0 3 * * *", job: { queue, type: "cleanup", payload: json({ deep: true }) } } });
    const next = timestampDate(schedule!.nextRunAt!);
    expect(next.getTime()).toBeGreaterThan(Date.now());
    expect(next.getUTCHours()).toBe(3);
    expect(next.getUTCMinutes()).toBe(0);
    const { schedules } = await tb.admin.listSchedules({});
    const listed = schedules.find((s) => s.name === `nightly-${queue}`);
    expect(listed).toMatchObject({ cron: "0 3 * * *", paused: false, job: { queue, type: "cleanup" } });
  });

  it("fires a due schedule once, keyed by its fire time, and moves on", async () => {
    const queue = uniqueQueue();
    const name = `every-minute-${queue}`;
    await tb.admin.setSchedule({ schedule: { name, cron: "* * * * *", job: { queue, type: "tick", payload: json({ n: 1 }), priority: 3 } } });
    const due = await makeDue(name);
    await tb.app.loops.cron.runOnce();
    await tb.app.loops.cron.runOnce();
    const jobs = await jobsOn(queue);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]!.idempotency_key).toBe(`cron:${name}:${due.toISOString()}`);
    expect(JSON.parse(jobs[0]!.payload.toString())).toEqual({ n: 1 });
    const s = (await tb.admin.listSchedules({})).schedules.find((x) => x.name === name)!;
    expect(s.lastJobId).toBe(jobs[0]!.id);
    expect(timestampDate(s.lastRunAt!).toISOString()).toBe(due.toISOString());
    expect(timestampDate(s.nextRunAt!).getTime()).toBeGreaterThan(Date.now() - 1000);
  });

  it("fires once, not once per missed time, after an outage", async () => {
    const queue = uniqueQueue();
    const name = `hourly-${queue}`;
    await tb.admin.setSchedule({ schedule: { name, cron: "@hourly", job: { queue, type: "t" } } });
    await makeDue(name, "5 hours");
    await tb.app.loops.cron.runOnce();
    expect(await jobsOn(queue)).toHaveLength(1);
    const s = (await tb.admin.listSchedules({})).schedules.find((x) => x.name === name)!;
    expect(timestampDate(s.nextRunAt!).getTime()).toBeGreaterThan(Date.now());
  });

  it("enqueues each fire once when two replicas race for it", async () => {
    const other = await startTestBroker({ schedulerIntervalMs: 600_000 }, { databaseUrl: tb.databaseUrl });
    try {
      const queue = uniqueQueue();
      const name = `raced-${queue}`;
      await tb.admin.setSchedule({ schedule: { name, cron: "* * * * *", job: { queue, type: "t" } } });
      for (let i = 0; i < 5; i++) {
        await makeDue(name, `${i + 1} minutes`);
        await Promise.all([tb.app.loops.cron.runOnce(), other.app.loops.cron.runOnce()]);
      }
      const jobs = await jobsOn(queue);
      expect(new Set(jobs.map((j) => j.idempotency_key)).size).toBe(jobs.length);
      expect(jobs.length).toBeLessThanOrEqual(5);
      expect(jobs.length).toBeGreaterThanOrEqual(1);
    } finally {
      await other.stop();
    }
  });

  it("fires on its own when the loop runs", async () => {
    const quick = await startTestBroker({ schedulerIntervalMs: 100 }, { databaseUrl: tb.databaseUrl });
    try {
      const queue = uniqueQueue();
      const name = `loop-${queue}`;
      await quick.admin.setSchedule({ schedule: { name, cron: "* * * * *", job: { queue, type: "t" } } });
      await makeDue(name);
      await eventually(async () => ((await jobsOn(queue)).length === 1 ? true : undefined), 10_000, "the loop to fire");
    } finally {
      await quick.stop();
    }
  });

  it("does not fire while paused", async () => {
    const queue = uniqueQueue();
    const name = `paused-${queue}`;
    const { schedule } = await tb.admin.setSchedule({ schedule: { name, cron: "* * * * *", paused: true, job: { queue, type: "t" } } });
    expect(schedule!.nextRunAt).toBeUndefined();
    await tb.app.loops.cron.runOnce();
    expect(await jobsOn(queue)).toHaveLength(0);
  });

  it("deletes schedules", async () => {
    const queue = uniqueQueue();
    await tb.admin.setSchedule({ schedule: { name: `gone-${queue}`, cron: "@daily", job: { queue, type: "t" } } });
    await tb.admin.deleteSchedule({ name: `gone-${queue}` });
    expect((await tb.admin.listSchedules({})).schedules.some((s) => s.name === `gone-${queue}`)).toBe(false);
    await expectCode(tb.admin.deleteSchedule({ name: `gone-${queue}` }), Code.NotFound);
  });

  it("refuses bad schedules with INVALID_ARGUMENT naming the field", async () => {
    const job = { queue: "q", type: "t" };
    await expectCode(tb.admin.setSchedule({}), Code.InvalidArgument, "schedule");
    await expectCode(tb.admin.setSchedule({ schedule: { name: "bad name", cron: "@daily", job } }), Code.InvalidArgument, "schedule.name");
    await expectCode(tb.admin.setSchedule({ schedule: { name: "s", cron: "61 * * * *", job } }), Code.InvalidArgument, 'schedule.cron: minute: "61"');
    await expectCode(tb.admin.setSchedule({ schedule: { name: "s", cron: "0 0 30 2 *", job } }), Code.InvalidArgument, "never fires");
    await expectCode(tb.admin.setSchedule({ schedule: { name: "s", cron: "@daily" } }), Code.InvalidArgument, "schedule.job");
    await expectCode(tb.admin.setSchedule({ schedule: { name: "s", cron: "@daily", job: { queue: "", type: "t" } } }), Code.InvalidArgument, "schedule.job.queue");
    await expectCode(
      tb.admin.setSchedule({ schedule: { name: "s", cron: "@daily", job: { ...job, schedule: { case: "delay", value: { seconds: 5n, nanos: 0 } } } } }),
      Code.InvalidArgument,
      "run_at or delay",
    );
    await expectCode(tb.admin.setSchedule({ schedule: { name: "s", cron: "@daily", job: { ...job, idempotencyKey: "k" } } }), Code.InvalidArgument, "idempotency_key");
  });
});
