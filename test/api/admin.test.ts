import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { JobState } from "@jobwire/proto/jobwire/v1/job_pb";
import { makeJob, makeJobs, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, expectCode, stateOf, uniqueQueue } from "./helpers.js";

const run = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;

let tb: TestBroker;
beforeAll(async () => {
  tb = await startTestBroker();
});
afterAll(async () => {
  await tb.stop();
});

/** Enqueues `n` jobs on `queue` and fails each permanently with `error`; returns their ids. */
async function deadJobs(queue: string, n: number, error: string, type = "t"): Promise<string[]> {
  const ids = await enqueue(tb, ...Array.from({ length: n }, () => ({ queue, type })));
  const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: n });
  for (const l of await s.take(n)) await tb.workers.nack({ leaseToken: l.leaseToken, error, permanent: true });
  s.kill();
  return ids;
}

describe("Replay", () => {
  it("revives dead jobs by id with a fresh attempt budget, keeping their errors; then they run", async () => {
    const queue = uniqueQueue();
    const [id] = await deadJobs(queue, 1, "provider down");
    const res = await tb.admin.replay({ jobIds: [id!] });
    expect(res).toMatchObject({ replayed: 1, jobIds: [id] });
    const { job } = await tb.jobs.getJob({ id: id! });
    expect(job).toMatchObject({ state: JobState.AVAILABLE, attempt: 0 });
    expect(job!.finishedAt).toBeUndefined();
    expect(job!.errors.map((e) => e.message)).toEqual(["provider down"]);

    // The fix is in: the replayed job now completes.
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const [l] = await s.take(1);
    expect(l!.job!.attempt).toBe(1);
    await tb.workers.ack({ leaseTokens: [l!.leaseToken] });
    expect(await stateOf(tb, id!)).toBe("completed");
    s.kill();
  });

  it("is idempotent: replaying again changes nothing", async () => {
    const queue = uniqueQueue();
    const ids = await deadJobs(queue, 2, "x");
    expect((await tb.admin.replay({ jobIds: ids })).replayed).toBe(2);
    expect((await tb.admin.replay({ jobIds: ids })).replayed).toBe(0);
  });

  it("replays by filter, with dry_run, type and error_contains", async () => {
    const queue = uniqueQueue();
    const smtp = await deadJobs(queue, 3, "smtp timeout after 30s", "email");
    await deadJobs(queue, 2, "invalid address", "email");
    await deadJobs(queue, 1, "smtp timeout after 30s", "sms");
    const filter = { queue, type: "email", errorContains: "smtp timeout" };
    const dry = await tb.admin.replay({ filter, dryRun: true });
    expect(dry).toMatchObject({ replayed: 3, jobIds: smtp });
    expect(await stateOf(tb, smtp[0]!)).toBe("dead");
    const limited = await tb.admin.replay({ filter, limit: 2 });
    expect(limited.jobIds).toEqual(smtp.slice(0, 2));
    const rest = await tb.admin.replay({ filter });
    expect(rest.jobIds).toEqual(smtp.slice(2));
  });

  it("filters by when the jobs died", async () => {
    const queue = uniqueQueue();
    // One that died two days ago.
    await makeJob(tb.db, { queue, state: "dead", finishedAgoMs: 2 * 24 * 3600_000 });
    const [recent] = await deadJobs(queue, 1, "x");
    const res = await tb.admin.replay({
      filter: { queue, finishedAfter: timestampFromDate(new Date(Date.now() - 3600_000)) },
      dryRun: true,
    });
    expect(res.jobIds).toEqual([recent]);
  });

  it("replays cancelled jobs only when asked", async () => {
    const queue = uniqueQueue();
    const [id] = await enqueue(tb, { queue });
    await tb.jobs.cancelJob({ id: id! });
    expect((await tb.admin.replay({ jobIds: [id!] })).replayed).toBe(0);
    expect((await tb.admin.replay({ jobIds: [id!], includeCancelled: true })).replayed).toBe(1);
    expect(await stateOf(tb, id!)).toBe("available");
  });

  it("replays large sets in batches", async () => {
    const queue = uniqueQueue();
    const ids = (await makeJobs(tb.db, 1500, { queue, state: "dead" })).map((j) => j.id);
    const res = await tb.admin.replay({ filter: { queue } });
    expect(res.replayed).toBe(1500);
    expect(new Set(res.jobIds)).toEqual(new Set(ids));
  });

  it("rejects ambiguous or empty requests", async () => {
    await expectCode(tb.admin.replay({}), Code.InvalidArgument, "job_ids");
    await expectCode(tb.admin.replay({ jobIds: ["1"], filter: { queue: "q" } }), Code.InvalidArgument, "filter");
    await expectCode(tb.admin.replay({ filter: { queue: "" } }), Code.InvalidArgument, "filter.queue");
    await expectCode(tb.admin.replay({ jobIds: ["x"] }), Code.InvalidArgument, "job_ids[0]");
    await expectCode(tb.admin.replay({ jobIds: ["1"], limit: -1 }), Code.InvalidArgument, "limit");
  });

  it("works with the README's buf curl command, through server reflection", async () => {
    const readme = await readFile(new URL("README.md", new URL(ROOT, "file:")), "utf8");
    const block = readme.match(/npx (?:@bufbuild\/)?buf curl[^\n]*\\\n(?:[^\n]*\\\n)*[^\n]*AdminService\/Replay[^\n]*/);
    expect(block, "README.md shows a buf curl Replay command").not.toBeNull();
    const queue = "emails";
    const ids = await deadJobs(queue, 2, "smtp timeout");
    const command = block![0].replace(/\\\n/g, " ").replace("http://127.0.0.1:50051", tb.url);
    const { stdout } = await run("sh", ["-c", command], { cwd: ROOT });
    const out = JSON.parse(stdout) as { replayed: number; jobIds: string[] };
    expect(out.replayed).toBe(2);
    expect(out.jobIds).toEqual(ids);
    expect(await stateOf(tb, ids[0]!)).toBe("available");
  }, 60_000);
});

describe("ListJobs and GetQueueStats", () => {
  it("lists newest first, filtered by state, a page at a time", async () => {
    const queue = uniqueQueue();
    const ids = await enqueue(tb, ...Array.from({ length: 5 }, () => ({ queue })));
    await tb.jobs.cancelJob({ id: ids[0]! });
    const p1 = await tb.admin.listJobs({ queue, pageSize: 2, states: [JobState.AVAILABLE] });
    expect(p1.jobs.map((j) => j.id)).toEqual([ids[4], ids[3]]);
    const p2 = await tb.admin.listJobs({ queue, pageSize: 2, states: [JobState.AVAILABLE], pageToken: p1.nextPageToken });
    expect(p2.jobs.map((j) => j.id)).toEqual([ids[2], ids[1]]);
    expect(p2.nextPageToken).toBe("");
    await expectCode(tb.admin.listJobs({ pageSize: 5000 }), Code.InvalidArgument, "page_size");
    await expectCode(tb.admin.listJobs({ pageToken: "nope" }), Code.InvalidArgument, "page_token");
  });

  it("filters by the last error's text, with keyset pages", async () => {
    const queue = uniqueQueue();
    const smtp = await deadJobs(queue, 3, "smtp timeout after 30s");
    await deadJobs(queue, 2, "bad address");
    const first = await tb.admin.listJobs({ queue, errorContains: "smtp", pageSize: 2 });
    expect(first.jobs.map((j) => j.id)).toEqual([smtp[2], smtp[1]]);
    const second = await tb.admin.listJobs({ queue, errorContains: "smtp", pageSize: 2, pageToken: first.nextPageToken });
    expect(second.jobs.map((j) => j.id)).toEqual([smtp[0]]);
    expect(second.nextPageToken).toBe("");
    await expectCode(tb.admin.listJobs({ errorContains: "a\u0000b" }), Code.InvalidArgument, "error_contains");
  });

  it("counts jobs per state and reports the oldest waiting job's age", async () => {
    const queue = uniqueQueue();
    const [cancelled] = await enqueue(tb, { queue });
    await tb.jobs.cancelJob({ id: cancelled! });
    // Waiting for 90 s, as if enqueued then.
    await makeJob(tb.db, { queue, runInMs: -90_000 });
    await enqueue(tb, { queue, schedule: { case: "delay", value: { seconds: 600n, nanos: 0 } } });
    const { queues } = await tb.admin.getQueueStats({ queues: [queue] });
    expect(queues).toHaveLength(1);
    expect(queues[0]).toMatchObject({ queue, available: 1n, scheduled: 1n, cancelled: 1n, running: 0n, dead: 0n });
    expect(Number(queues[0]!.oldestAvailableAge!.seconds)).toBeGreaterThanOrEqual(89);
  });
});
