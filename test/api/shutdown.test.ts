import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { WorkerService, LeaseRequestSchema, type LeaseRequest } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import { createLogger } from "@jobwire/server";
import { Channel, createTestDatabase, startTestBroker, TestLeaseStream } from "@jobwire/server/testing";
import { describe, expect, it } from "vitest";
import { enqueue, stateOf, uniqueQueue } from "./helpers.js";

const MAIN = new URL("../../server/dist/main.js", import.meta.url).pathname;

/** Runs the real broker binary; resolves once it prints where it listens. */
async function spawnBroker(databaseUrl: string): Promise<{ proc: ChildProcess; url: string; exit: Promise<number | null> }> {
  const proc = spawn(process.execPath, [MAIN], {
    env: { ...process.env, DATABASE_URL: databaseUrl, JOBWIRE_PORT: "0", JOBWIRE_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exit = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout! });
    lines.on("line", (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) resolve(m[1]!);
    });
    void exit.then((code) => reject(new Error(`broker exited with ${code} before listening`)));
  });
  return { proc, url, exit };
}

describe("graceful shutdown", () => {
  it("on SIGTERM ends lease streams with UNAVAILABLE, exits 0, and leased jobs keep their leases", async () => {
    const databaseUrl = await createTestDatabase();
    const broker = await spawnBroker(databaseUrl);
    const transport = createGrpcTransport({ baseUrl: broker.url });
    const workers = createClient(WorkerService, transport);
    const { JobService } = await import("@jobwire/proto/jobwire/v1/job_service_pb");
    const jobs = createClient(JobService, transport);
    const queue = uniqueQueue();
    const { results } = await jobs.enqueue({ jobs: [{ queue, type: "t" }, { queue, type: "t" }] });
    const s = new TestLeaseStream(workers, { queues: [queue], maxInFlight: 1 });
    const [l] = await s.take(1);

    broker.proc.kill("SIGTERM");
    const err = await s.ended;
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unavailable);
    expect(await broker.exit).toBe(0);

    // Another broker on the same database: the lease still holds, and the ack lands.
    const next = await startTestBroker({}, { databaseUrl });
    try {
      expect(await stateOf(next, l!.job!.id)).toBe("running");
      expect(await stateOf(next, results[1]!.jobId)).toBe("available");
      expect((await next.workers.ack({ leaseTokens: [l!.leaseToken] })).lostLeaseTokens).toEqual([]);
      expect(await stateOf(next, l!.job!.id)).toBe("completed");
    } finally {
      await next.stop();
    }
  });

  it("does not wait for clients that never close their side of a finished stream", async () => {
    const lines: string[] = [];
    const log = createLogger("warn", (line) => void lines.push(line));
    const tb = await startTestBroker({ shutdownTimeoutMs: 30_000 }, { log });
    const requests = new Channel<LeaseRequest>();
    requests.push(create(LeaseRequestSchema, { msg: { case: "open", value: { queues: [uniqueQueue()], maxInFlight: 1 } } }));
    const ended = (async () => {
      try {
        for await (const _ of tb.workers.lease(requests)) void _;
      } catch (e) {
        return e;
      }
    })();
    await new Promise((r) => setTimeout(r, 50)); // let the stream open
    await tb.stop(); // the request channel is never closed
    expect(String(await ended)).toContain("unavailable");
    expect(lines.filter((l) => l.includes("shutdown timeout"))).toEqual([]);
  });

  it("stops handing out leases while draining", async () => {
    const tb = await startTestBroker();
    const queue = uniqueQueue();
    await enqueue(tb, { queue });
    await tb.app.broker.dispatcher.drain();
    const s = new TestLeaseStream(tb.workers, { queues: [queue] });
    const err = await s.ended;
    expect((err as ConnectError).code).toBe(Code.Unavailable);
    expect(await tb.db.query("SELECT state::text FROM jobwire.jobs WHERE queue = $1", [queue]).then((r) => r.rows[0].state)).toBe("available");
    await tb.stop();
  });
});
