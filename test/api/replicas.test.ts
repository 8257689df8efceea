import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as v1alpha from "@jobwire/proto/grpc/reflection/v1alpha/reflection_pb";
import * as v1 from "@jobwire/proto/grpc/reflection/v1/reflection_pb";
import { makeJobs, startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, ms, uniqueQueue } from "./helpers.js";

let a: TestBroker;
let b: TestBroker;
beforeAll(async () => {
  // Two replicas on one database; the reapers are driven by hand.
  a = await startTestBroker({ reaperIntervalMs: 600_000 });
  b = await startTestBroker({ reaperIntervalMs: 600_000 }, { databaseUrl: a.databaseUrl });
});
afterAll(async () => {
  await b.stop();
  await a.stop();
});

describe("several replicas on one database", () => {
  it("reap each expired lease exactly once", async () => {
    const queue = uniqueQueue();
    // Leased, and the worker gone a second past the leases' end.
    const ids = (await makeJobs(a.db, 300, { queue, state: "running", maxAttempts: 5, leaseMs: 100, leaseExpiresInMs: -1000 })).map((j) => j.id);
    // Small batches, so the two reapers interleave.
    const reap = (t: TestBroker) => (async () => {
      let n = 0;
      for (;;) {
        const got = await t.app.broker.store.reapExpired(25);
        if (got.length === 0) return n;
        n += got.length;
      }
    })();
    const [na, nb] = await Promise.all([reap(a), reap(b)]);
    expect(na + nb).toBe(300);
    const { rows } = await a.db.query(
      "SELECT id, jsonb_array_length(errors) AS n, state::text FROM jobwire.jobs WHERE id = ANY($1::bigint[])",
      [ids],
    );
    expect(rows.every((r) => r.n === 1 && r.state === "retryable")).toBe(true);
  });

  it("deliver each job to one stream across replicas", async () => {
    const queue = uniqueQueue();
    const ids = await enqueue(a, ...Array.from({ length: 200 }, () => ({ queue })));
    const sa = new TestLeaseStream(a.workers, { queues: [queue], maxInFlight: 200 });
    const sb = new TestLeaseStream(b.workers, { queues: [queue], maxInFlight: 200 });
    const seen: string[] = [];
    while (seen.length < 200) {
      for (const s of [sa, sb]) {
        const got = await s.take(Math.max(1, s.pending), 200).catch(() => []);
        seen.push(...got.map((l) => l.job!.id));
      }
    }
    expect(new Set(seen).size).toBe(200);
    expect(seen.sort()).toEqual([...ids].sort());
    sa.kill();
    sb.kill();
  });
});

describe("queue configuration", () => {
  it("applies a queue's retry policy and max attempts to jobs that set none", async () => {
    const queue = uniqueQueue();
    await a.admin.setQueueConfig({ queue, maxAttempts: 2, retry: { initialBackoff: ms(20_000), multiplier: 3, jitter: 0 } });
    const [id] = await enqueue(a, { queue });
    const s = new TestLeaseStream(a.workers, { queues: [queue], maxInFlight: 1 });
    const [l] = await s.take(1);
    const before = Date.now();
    const res = await a.workers.nack({ leaseToken: l!.leaseToken, error: "first" });
    const wait = timestampDate(res.runAt!).getTime() - before;
    expect(wait).toBeGreaterThan(19_000);
    expect(wait).toBeLessThan(21_000);
    expect((await a.jobs.getJob({ id: id! })).job!.maxAttempts).toBe(2);
    s.kill();
  });
});

describe("server reflection", () => {
  it("answers both grpc.reflection.v1 and v1alpha", async () => {
    const transport = createGrpcTransport({ baseUrl: a.url });
    for (const api of [v1, v1alpha] as const) {
      const client = createClient(api.ServerReflection as typeof v1.ServerReflection, transport);
      const requests = (async function* () {
        yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
        yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "jobwire.v1.AdminService.Replay" } });
        yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "no.such.Thing" } });
      })();
      const answers = [];
      for await (const r of client.serverReflectionInfo(requests)) answers.push(r.messageResponse);
      expect(answers[0]!.case).toBe("listServicesResponse");
      const names = (answers[0]!.value as { service: { name: string }[] }).service.map((s) => s.name);
      expect(names).toEqual(expect.arrayContaining(["jobwire.v1.JobService", "jobwire.v1.WorkerService", "jobwire.v1.AdminService"]));
      expect(answers[1]!.case).toBe("fileDescriptorResponse");
      expect((answers[1]!.value as { fileDescriptorProto: Uint8Array[] }).fileDescriptorProto.length).toBeGreaterThanOrEqual(2);
      expect(answers[2]!.case).toBe("errorResponse");
    }
  });
});
