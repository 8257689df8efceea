import { Code } from "@connectrpc/connect";
import { JobwireClient } from "@jobwire/client";
import { eventually, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, expectCode, ms, stateOf, uniqueQueue } from "./helpers.js";

/**
 * Retention of completed jobs, over gRPC: SetQueueConfig's
 * completed_retention, the ack that deletes, and the pruner.
 */
let tb: TestBroker;
beforeAll(async () => {
  // The pruner runs every 50 ms here, so a short retention is seen quickly.
  tb = await startTestBroker({ prunerIntervalMs: 50 });
});
afterAll(async () => {
  await tb.stop();
});

async function leaseAndAck(queue: string, n: number): Promise<void> {
  const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: n });
  const leases = await s.take(n);
  const res = await tb.workers.ack({ leaseTokens: leases.map((l) => l.leaseToken) });
  expect(res.lostLeaseTokens).toEqual([]);
  s.kill();
}

describe("completed_retention", () => {
  it("of zero deletes each job when it is acked; GetJob then answers NOT_FOUND", async () => {
    const queue = uniqueQueue("drop");
    await tb.admin.setQueueConfig({ queue, completedRetention: ms(0) });
    const ids = await enqueue(tb, { queue }, { queue });
    await leaseAndAck(queue, 2);
    for (const id of ids) {
      expect(await stateOf(tb, id)).toBe("missing");
      await expectCode(tb.jobs.getJob({ id }), Code.NotFound);
    }
  });

  it("keeps completed jobs for the broker's default retention when the queue sets none", async () => {
    const queue = uniqueQueue("keep");
    const [id] = await enqueue(tb, { queue });
    await leaseAndAck(queue, 1);
    const { rows } = await tb.db.query(
      "SELECT state::text, extract(epoch FROM prune_at - finished_at) AS kept_s FROM jobwire.jobs WHERE id = $1",
      [id],
    );
    expect(rows[0].state).toBe("completed");
    expect(Number(rows[0].kept_s)).toBeCloseTo(24 * 3600, -1);
  });

  it("prunes completed jobs once their retention has passed, and leaves dead ones", async () => {
    const queue = uniqueQueue("short");
    await tb.admin.setQueueConfig({ queue, completedRetention: ms(200) });
    const [done, dead] = await enqueue(tb, { queue }, { queue });
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 2 });
    const leases = await s.take(2);
    const byId = new Map(leases.map((l) => [l.job!.id, l.leaseToken]));
    await tb.workers.ack({ leaseTokens: [byId.get(done!)!] });
    await tb.workers.nack({ leaseToken: byId.get(dead!)!, error: "boom", permanent: true });
    s.kill();
    expect(await stateOf(tb, done!)).toBe("completed");
    const before = await prunedTotal();
    // The broker's own pruner (every 50 ms here) takes it once 200 ms have passed.
    await eventually(async () => ((await stateOf(tb, done!)) === "missing" ? true : undefined), 10_000, "the pruner");
    expect(await stateOf(tb, dead!)).toBe("dead");
    expect(await prunedTotal()).toBeGreaterThan(before);
  });

  it("is set through the TypeScript client too", async () => {
    const queue = uniqueQueue("client");
    const client = new JobwireClient({ address: tb.url });
    try {
      await client.setQueueConfig(queue, { completedRetentionMs: 0 });
    } finally {
      client.close();
    }
    const { rows } = await tb.db.query("SELECT completed_retention_ms::int AS ms FROM jobwire.queues WHERE name = $1", [queue]);
    expect(rows[0].ms).toBe(0);
  });

  it("must not be negative: INVALID_ARGUMENT naming the field", async () => {
    await expectCode(
      tb.admin.setQueueConfig({ queue: uniqueQueue(), completedRetention: { seconds: -1n, nanos: 0 } }),
      Code.InvalidArgument,
      "completed_retention",
    );
  });
});

async function prunedTotal(): Promise<number> {
  const text = await (await fetch(`${tb.url}/metrics`)).text();
  const m = /^jobwire_jobs_pruned_total (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}
