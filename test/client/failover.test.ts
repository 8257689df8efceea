/**
 * Failover (issue 14, finding 16) with real brokers on one database:
 *
 *   - a broker that dies mid-response is UNAVAILABLE to the caller, and the
 *     call is retried on the next broker, not failed as UNKNOWN;
 *   - a producer and a worker pinned to a broker that is then SIGKILLed
 *     carry on through the other one, named either as a list of addresses
 *     or as one DNS name with a record per broker, and no job is lost.
 */
import dns from "node:dns";
import http2 from "node:http2";
import type { AddressInfo, LookupFunction, Socket } from "node:net";
import { Code, JobwireClient, type JobInfo, UnavailableError, Worker } from "@jobwire/client";
import { type TestBroker, startTestBroker } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerProcess, startBrokerProcess } from "./broker-process.js";
import { deferred, eventually, testLogger, uniqueQueue, waitForState, within } from "./helpers.js";

/** The broker that survives; in-process, on 127.0.0.2 so that a name can also point at it. */
let survivor: TestBroker;
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  survivor = await startTestBroker({ host: "127.0.0.2" });
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await survivor?.stop();
});

/**
 * An HTTP/2 server that takes every call, sends the response headers, and
 * then drops the connection: a broker killed between its headers and its
 * trailers, made reproducible.
 */
async function dyingServer(): Promise<string> {
  const server = http2.createServer();
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => sockets.add(s));
  server.on("stream", (stream) => {
    stream.on("error", () => {});
    stream.respond({ ":status": 200, "content-type": "application/grpc+proto" });
    setTimeout(() => {
      for (const s of sockets) s.destroy();
    }, 10);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function newClient(address: string | string[], extra: { lookup?: LookupFunction } = {}): JobwireClient {
  const client = new JobwireClient({ address, timeoutMs: 10_000, retry: { initialMs: 20, maxMs: 200 }, logger: testLogger, ...extra });
  cleanups.push(() => client.close());
  return client;
}

describe("a broker that dies mid-response", () => {
  it("is UNAVAILABLE to the caller, not UNKNOWN", async () => {
    const client = newClient(await dyingServer());
    const err = await client.getJob("1", { timeoutMs: 3000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as UnavailableError).code).toBe(Code.Unavailable);
    expect((err as Error).message).toMatch(/^unavailable: the stream ended before the call.s status arrived/);
  });

  it("is retried on the next broker, for unary calls and the worker's Lease stream alike", async () => {
    const dying = await dyingServer();
    const client = newClient([dying, survivor.url]);
    const queue = uniqueQueue("midresponse");
    const { id } = await client.enqueue("t", { n: 1 }, { queue });
    expect(client.address).toBe(survivor.url);

    const handled = deferred();
    const worker = new Worker({
      address: [dying, survivor.url],
      queues: [queue],
      handlers: { t: () => handled.resolve() },
      handleSignals: false,
      logger: testLogger,
      reconnectBackoff: { initialMs: 20, maxMs: 200 },
    });
    const done = worker.run();
    cleanups.push(() => worker.stop());
    await within(handled.promise, 10_000, "the worker to take the job through the live broker");
    await waitForState(client, id, "COMPLETED");
    expect(worker.client.address).toBe(survivor.url);
    await worker.stop();
    await done;
  });
});

describe("a broker killed with SIGKILL mid-run", () => {
  it("leaves producers and workers running on the other broker (a list of addresses)", async () => {
    const victim = await startBrokerProcess({ DATABASE_URL: survivor.databaseUrl });
    cleanups.push(victim.kill);
    await runThroughBrokerKill([victim.url, survivor.url], victim);
  });

  it("leaves producers and workers running on the other broker (one DNS name, a record per broker)", async () => {
    // One port on two loopback addresses: the victim on 127.0.0.1, the survivor on 127.0.0.2.
    const port = new URL(survivor.url).port;
    const victim = await startBrokerProcess({ DATABASE_URL: survivor.databaseUrl, JOBWIRE_PORT: port });
    cleanups.push(victim.kill);
    const name = "brokers.jobwire.test";
    const lookup = ((hostname: string, options: dns.LookupOptions, callback: (...args: unknown[]) => void) => {
      if (hostname !== name) return dns.lookup(hostname, options, callback as never);
      const records = [
        { address: "127.0.0.1", family: 4 },
        { address: "127.0.0.2", family: 4 },
      ];
      if (options.all) callback(null, records);
      else callback(null, records[0]!.address, 4);
    }) as LookupFunction;
    await runThroughBrokerKill(`http://${name}:${port}`, victim, lookup);
  });
});

/**
 * Runs a producer and a worker (on clients of their own) against `address`,
 * whose first broker is `victim`; SIGKILLs the victim once a quarter of the
 * jobs are done, while one job is held in its handler; and checks that
 * every enqueue succeeded and every job ends COMPLETED. Half the jobs are
 * enqueued after the kill, so they can only go through the survivor; the
 * held job's heartbeats and ack too.
 */
async function runThroughBrokerKill(address: string | string[], victim: BrokerProcess, lookup?: LookupFunction): Promise<void> {
  const JOBS = 200;
  const HELD = 10;
  const queue = uniqueQueue("failover");
  const producer = newClient(address, lookup ? { lookup } : {});
  const admin = new JobwireClient({ address: survivor.url });
  cleanups.push(() => admin.close());

  const runs = new Map<number, number>();
  const heldStarted = deferred();
  const killed = deferred();
  const quarter = deferred();
  const worker = new Worker({
    address,
    ...(lookup ? { client: newClient(address, { lookup }) } : {}),
    queues: [queue],
    concurrency: 8,
    // A job on its way to the worker when the victim died was leased but
    // never received: it comes back once this lease expires.
    leaseDurationMs: 2000,
    handleSignals: false,
    logger: testLogger,
    reconnectBackoff: { initialMs: 20, maxMs: 200 },
    handlers: {
      n: async (job) => {
        const n = (job.payload as { n: number }).n;
        runs.set(n, (runs.get(n) ?? 0) + 1);
        if (n === HELD && !killed.settled) {
          heldStarted.resolve();
          await killed.promise;
        }
        if (runs.size >= JOBS / 4) quarter.resolve();
      },
    },
  });
  const done = worker.run();
  cleanups.push(() => worker.stop());

  // Each job has an idempotency key, so that an enqueue retried after the
  // victim died mid-call cannot make a second job.
  const ids: string[] = [];
  const enqueue = async (from: number, to: number) => {
    for (let n = from; n < to; n++) {
      const r = await producer.enqueue("n", { n }, { queue, idempotencyKey: `${queue}-${n}` });
      ids[n] = r.id;
    }
  };
  await enqueue(0, JOBS / 2);
  await within(Promise.all([heldStarted.promise, quarter.promise]), 20_000, "a quarter of the jobs, and the held one, to run");
  expect(producer.address).toBe(Array.isArray(address) ? address[0] : address);
  expect(worker.client.address).toBe(Array.isArray(address) ? address[0] : address);
  // The survivor (this process) serves no stream of the worker yet: it is on the victim.
  expect(await streamsOnSurvivor(admin, queue, worker.workerId)).toEqual([]);
  await victim.kill();
  killed.resolve();
  await enqueue(JOBS / 2, JOBS);

  await eventually(
    async () => {
      const [stats] = await admin.getQueueStats([queue]);
      return stats !== undefined && stats.completed === JOBS ? stats : undefined;
    },
    30_000,
    `all ${JOBS} jobs to complete`,
  );
  const completed: JobInfo[] = [];
  for (let token = ""; ; ) {
    const page = await admin.listJobs({ queue, pageSize: 1000, pageToken: token });
    completed.push(...page.jobs);
    if ((token = page.nextPageToken) === "") break;
  }
  expect(completed.every((j) => j.state === "COMPLETED")).toBe(true);
  expect(new Set(completed.map((j) => j.id))).toEqual(new Set(ids));
  for (let n = 0; n < JOBS; n++) expect(runs.get(n) ?? 0, `runs of job ${n}`).toBeGreaterThanOrEqual(1);
  // The worker's stream moved to the survivor.
  await eventually(async () => ((await streamsOnSurvivor(admin, queue, worker.workerId)).length === 1 ? true : undefined), 10_000, "the worker's stream on the survivor");
  if (Array.isArray(address)) {
    expect(producer.address).toBe(survivor.url);
    expect(worker.client.address).toBe(survivor.url);
  }
  await worker.stop();
  await done;
}

/**
 * The worker's Lease streams that the survivor serves. Broker ids are
 * host:pid:random, and the survivor runs in this process; a replica's own
 * streams are listed live (other replicas' every few seconds).
 */
async function streamsOnSurvivor(admin: JobwireClient, queue: string, workerId: string) {
  const streams = await admin.listWorkers(queue);
  return streams.filter((w) => w.workerId === workerId && w.brokerId.split(":")[1] === String(process.pid));
}
