import { create } from "@bufbuild/protobuf";
import { silentLogger, Worker } from "@jobwire/client";
import { JobSpecSchema } from "@jobwire/proto/jobwire/v1/job_pb";
import { eventually, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ms, uniqueQueue } from "./helpers.js";

/**
 * Flow control holds across broker replicas (issue 11, "Correctness"): two
 * brokers on one database, workers on both, and a sampler that reads the
 * RUNNING rows every few milliseconds. max_running and max_running_per_key
 * must never be exceeded; jobs of one ordering key must never overlap nor
 * run out of order; every job must end COMPLETED. The second run kills a
 * worker mid-run, so leases expire and the reaper must give back slots and
 * keys.
 */
const MAX_RUNNING = 6;
const PER_KEY = 2;
const KEYS = 5;
const ORDER_KEYS = 4;

let a: TestBroker;
let b: TestBroker;
beforeAll(async () => {
  a = await startTestBroker({ reaperIntervalMs: 50 });
  b = await startTestBroker({ reaperIntervalMs: 50 }, { databaseUrl: a.databaseUrl });
});
afterAll(async () => {
  await b?.stop();
  await a?.stop();
});

interface Violations {
  maxRunning: number;
  perKey: number;
  orderingOverlap: string[];
  outOfOrder: string[];
}

/** Reads RUNNING rows every few ms until stopped; records the worst it saw. */
function sampler(limited: string, ordered: string) {
  let stop = false;
  let samples = 0;
  const seen: Violations = { maxRunning: 0, perKey: 0, orderingOverlap: [], outOfOrder: [] };
  const done = (async () => {
    while (!stop) {
      const { rows } = await a.db.query<{ queue: string; concurrency_key: string | null; ordering_key: string | null; n: number }>(
        `SELECT queue, concurrency_key, ordering_key, count(*)::int AS n FROM jobwire.jobs
         WHERE state = 'running' AND queue = ANY($1::text[]) GROUP BY 1, 2, 3`,
        [[limited, ordered]],
      );
      samples++;
      const total = rows.filter((r) => r.queue === limited).reduce((s, r) => s + r.n, 0);
      seen.maxRunning = Math.max(seen.maxRunning, total);
      for (const r of rows) {
        if (r.queue === limited && r.concurrency_key) seen.perKey = Math.max(seen.perKey, r.n);
        if (r.queue === ordered && r.n > 1) seen.orderingOverlap.push(`${r.ordering_key} had ${r.n} running`);
      }
      await new Promise((r) => setTimeout(r, 3));
    }
  })();
  return {
    seen,
    samples: () => samples,
    async stop() {
      stop = true;
      await done;
    },
  };
}

async function run(killOne: boolean): Promise<void> {
  const limited = uniqueQueue("lim");
  const ordered = uniqueQueue("ord");
  await a.admin.setQueueConfig({ queue: limited, maxRunning: MAX_RUNNING, maxRunningPerKey: PER_KEY });
  // Half the limited jobs on one broker, half on the other; ordering keys interleaved in one call each.
  const limitedSpecs = Array.from({ length: 120 }, (_, i) =>
    create(JobSpecSchema, { queue: limited, type: "work", concurrencyKey: `k${i % KEYS}`, leaseDuration: ms(600) }),
  );
  const orderedSpecs = Array.from({ length: 60 }, (_, i) =>
    create(JobSpecSchema, { queue: ordered, type: "work", orderingKey: `o${i % ORDER_KEYS}`, leaseDuration: ms(600) }),
  );
  const ids = [
    ...(await a.jobs.enqueue({ jobs: limitedSpecs.slice(0, 60) })).results,
    ...(await b.jobs.enqueue({ jobs: limitedSpecs.slice(60) })).results,
  ].map((r) => r.jobId);
  const orderedIds = (await a.jobs.enqueue({ jobs: orderedSpecs })).results.map((r) => r.jobId);
  const keyOf = new Map(orderedIds.map((id, i) => [id, `o${i % ORDER_KEYS}`]));

  // What the handlers saw, in this one process: overlap and order per ordering key.
  const active = new Map<string, number>();
  const lastStarted = new Map<string, bigint>();
  const v: Violations = { maxRunning: 0, perKey: 0, orderingOverlap: [], outOfOrder: [] };
  const handler = async (job: { id: string }) => {
    const key = keyOf.get(job.id);
    if (key) {
      active.set(key, (active.get(key) ?? 0) + 1);
      if (active.get(key)! > 1) v.orderingOverlap.push(`${key} overlapped at ${job.id}`);
      const prev = lastStarted.get(key);
      // A reclaimed job runs again: the same id may start twice, never an earlier one after a later.
      if (prev !== undefined && BigInt(job.id) < prev) v.outOfOrder.push(`${key}: ${job.id} after ${prev}`);
      lastStarted.set(key, BigInt(job.id));
    }
    await new Promise((r) => setTimeout(r, 2 + Math.random() * 8));
    if (key) active.set(key, active.get(key)! - 1);
  };

  const s = sampler(limited, ordered);
  let victim: TestLeaseStream | null = null;
  if (killOne) {
    // A worker that takes jobs and dies holding them: their leases expire
    // (600 ms) and the reaper must release their slots and keys.
    victim = new TestLeaseStream(b.workers, { queues: [limited, ordered], maxInFlight: 4, leaseMs: 600 });
    await victim.take(4);
    victim.kill();
  }
  const workers = [a, a, b, b].map(
    (tb) =>
      new Worker({
        address: tb.url,
        queues: [limited, ordered],
        concurrency: 8,
        handleSignals: false,
        logger: silentLogger,
        handlers: { work: handler },
      }),
  );
  const running = workers.map((w) => w.run());
  try {
    await eventually(
      async () => {
        const { rows } = await a.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = ANY($1::text[]) AND state = 'completed'", [
          [limited, ordered],
        ]);
        return rows[0].n === ids.length + orderedIds.length ? true : undefined;
      },
      60_000,
      "every job completed",
    );
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await Promise.allSettled(running);
    await s.stop();
  }
  expect(s.samples()).toBeGreaterThan(20);
  expect(s.seen.maxRunning).toBeLessThanOrEqual(MAX_RUNNING);
  expect(s.seen.perKey).toBeLessThanOrEqual(PER_KEY);
  expect(s.seen.orderingOverlap).toEqual([]);
  expect(v.orderingOverlap).toEqual([]);
  expect(v.outOfOrder).toEqual([]);
  // The limit was reached, so the test checked something.
  expect(s.seen.maxRunning).toBeGreaterThanOrEqual(PER_KEY);
  const { rows } = await a.db.query(
    "SELECT state::text, count(*)::int AS n, max(attempt) AS attempts FROM jobwire.jobs WHERE queue = ANY($1::text[]) GROUP BY 1",
    [[limited, ordered]],
  );
  expect(rows.map((r) => r.state)).toEqual(["completed"]);
  if (killOne) expect(rows[0].attempts).toBeGreaterThanOrEqual(2);
}

describe("flow control across two replicas", () => {
  it("never exceeds max_running or max_running_per_key, never overlaps or reorders an ordering key, and completes every job", async () => {
    await run(false);
  });

  it("holds the same with a worker killed mid-run, its leases expiring", async () => {
    await run(true);
  });
});
