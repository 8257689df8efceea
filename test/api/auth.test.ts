import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import { JobwireClient, Worker } from "@jobwire/client";
import { afterAll, beforeAll, expect, it } from "vitest";
import { expectCode, uniqueQueue } from "./helpers.js";

const TOKEN = "s3cret-token-0123456789";
const OLD = "previous-token-9876543210";
let tb: TestBroker;
beforeAll(async () => {
  tb = await startTestBroker({ authTokens: [TOKEN, OLD] });
});
afterAll(async () => {
  await tb.stop();
});

function clients(token?: string) {
  const transport = createGrpcTransport({
    baseUrl: tb.url,
    interceptors: token ? [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))] : [],
  });
  return { jobs: createClient(JobService, transport), workers: createClient(WorkerService, transport) };
}

it("refuses calls without a valid bearer token with UNAUTHENTICATED", async () => {
  const queue = uniqueQueue();
  await expectCode(clients().jobs.enqueue({ jobs: [{ queue, type: "t" }] }), Code.Unauthenticated, "bearer token");
  await expectCode(clients("wrong-token-00000000000").jobs.enqueue({ jobs: [{ queue, type: "t" }] }), Code.Unauthenticated);
  const s = new TestLeaseStream(clients().workers, { queues: [queue] });
  expect(String(await s.ended)).toContain("unauthenticated");
  const { rows } = await tb.db.query("SELECT count(*)::int AS n FROM jobwire.jobs WHERE queue = $1", [queue]);
  expect(rows[0].n).toBe(0);
});

it("accepts any configured token, so tokens can be rotated", async () => {
  const queue = uniqueQueue();
  for (const t of [TOKEN, OLD]) {
    const res = await clients(t).jobs.enqueue({ jobs: [{ queue, type: "t" }] });
    expect(res.results).toHaveLength(1);
  }
  const s = new TestLeaseStream(clients(TOKEN).workers, { queues: [queue], maxInFlight: 2 });
  expect(await s.take(2)).toHaveLength(2);
  s.kill();
});

it("lets the TypeScript client send a token, on unary calls and on the Lease stream", async () => {
  const queue = uniqueQueue();
  const anonymous = new JobwireClient({ address: tb.url, retry: { maxAttempts: 1 } });
  await expect(anonymous.enqueue("t", {}, { queue })).rejects.toMatchObject({ codeName: "UNAUTHENTICATED" });
  anonymous.close();
  const client = new JobwireClient({ address: tb.url, token: TOKEN });
  await client.enqueue("t", {}, { queue });
  let ran!: () => void;
  const done = new Promise<void>((resolve) => (ran = resolve));
  const worker = new Worker({ client, queues: [queue], handleSignals: false, handlers: { t: async () => ran() } });
  const running = worker.run();
  await done;
  await worker.stop();
  await running;
  client.close();
});

it("keeps health and metrics open", async () => {
  expect((await fetch(`${tb.url}/healthz`)).status).toBe(200);
  expect((await fetch(`${tb.url}/metrics`)).status).toBe(200);
});
