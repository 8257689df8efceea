import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Code } from "@connectrpc/connect";
import { startEmbedded, type EmbeddedPostgres } from "@jobwire/server";
import { eventually, startTestBroker, TestLeaseStream } from "@jobwire/server/testing";
import { afterAll, beforeAll, expect, it } from "vitest";
import { enqueue, expectCode, uniqueQueue } from "./helpers.js";

/** A Postgres of this test's own, so it can be stopped and started again. */
let dir: string;
let pg: EmbeddedPostgres;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "jobwire-outage-"));
  pg = await startEmbedded({ dir, port: 0, unsafeFast: true });
});
afterAll(async () => {
  await pg.stop();
  await rm(dir, { recursive: true, force: true });
});

it("stays up through a database outage: UNAVAILABLE while it lasts, then back to work", async () => {
  const port = pg.port;
  const tb = await startTestBroker({ pollIntervalMs: 200 }, { databaseUrl: pg.url() });
  try {
    const queue = uniqueQueue();
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    await enqueue(tb, { queue });
    const [first] = await s.take(1);

    await pg.stop();
    await expectCode(enqueue(tb, { queue }), Code.Unavailable);
    await expectCode(tb.workers.ack({ leaseTokens: [first!.leaseToken] }), Code.Unavailable);

    pg = await startEmbedded({ dir, port, unsafeFast: true });
    // The pool and the LISTEN connection reconnect; the open stream keeps its session.
    await eventually(async () => (await enqueue(tb, { queue }).then(() => true, () => undefined)), 20_000, "enqueue after restart");
    expect((await tb.workers.ack({ leaseTokens: [first!.leaseToken] })).lostLeaseTokens).toEqual([]);
    s.credit(1);
    const more = await s.take(1, 20_000);
    expect(more).toHaveLength(1);
    s.kill();
  } finally {
    await tb.stop();
  }
}, 60_000);
