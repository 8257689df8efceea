/**
 * The client and the worker over TLS and mutual TLS, against a broker
 * started the way an operator starts one (JOBWIRE_TLS_CERT, JOBWIRE_TLS_KEY,
 * and JOBWIRE_TLS_CLIENT_CA for mTLS), with a CA and certificates made for
 * the run (pki.ts). Each case runs an Enqueue, a Lease and an Ack.
 *
 * The suite first probes whether the broker serves TLS at all (it prints an
 * https:// URL and answers a call through it); the cases are skipped, and
 * say so, while it does not.
 */
import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Code, JobwireClient, PermissionDeniedError, type TlsOptions, UnavailableError, Worker } from "@jobwire/client";
import { createTestDatabase } from "@jobwire/server/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerProcess, startBrokerProcess } from "./broker-process.js";
import { deferred, testLogger, uniqueQueue, waitForState, within } from "./helpers.js";
import { SERVER_NAME, makeTestPki } from "./pki.js";

const pki = makeTestPki();
const databaseUrl = await createTestDatabase();
const tlsEnv = { DATABASE_URL: databaseUrl, JOBWIRE_TLS_CERT: pki.files.serverCert, JOBWIRE_TLS_KEY: pki.files.serverKey };
const clients: JobwireClient[] = [];
const brokers: BrokerProcess[] = [];

/** The TLS broker, if the probe found one; the cases below reuse it. */
const tlsBroker = await probe();

afterAll(async () => {
  for (const c of clients) c.close();
  for (const b of brokers) await b.kill();
  rmSync(pki.dir, { recursive: true, force: true });
});

async function probe(): Promise<BrokerProcess | undefined> {
  const b = await startBrokerProcess(tlsEnv);
  brokers.push(b);
  if (!b.url.startsWith("https://")) {
    console.warn(`TLS cases skipped: with JOBWIRE_TLS_CERT set the broker listens on ${b.url}`);
    return undefined;
  }
  const c = client(b.url, { ca: pki.ca }, 1);
  const answered = await c.getQueueStats([], { timeoutMs: 5000 }).then(
    () => true,
    (err: unknown) => (console.warn(`TLS cases skipped: the broker does not answer over TLS (${String(err)})`), false),
  );
  return answered ? b : undefined;
}

function client(address: string, tls: TlsOptions | undefined, maxAttempts = 5): JobwireClient {
  const c = new JobwireClient({ address, ...(tls ? { tls } : {}), retry: { maxAttempts, initialMs: 20, maxMs: 200 }, logger: testLogger });
  clients.push(c);
  return c;
}

/** Enqueue through one client, Lease and Ack through a worker with the same TLS settings, and wait for COMPLETED. */
async function roundTrip(address: string, tls: TlsOptions): Promise<void> {
  const queue = uniqueQueue("tls");
  const producer = client(address, tls);
  const seen = deferred<unknown>();
  const worker = new Worker({
    address,
    tls,
    queues: [queue],
    handlers: { greet: (job) => seen.resolve(job.payload) },
    handleSignals: false,
    logger: testLogger,
  });
  const done = worker.run();
  try {
    const { id } = await producer.enqueue("greet", { name: "over tls" }, { queue });
    expect(await within(seen.promise, 10_000, "the worker to lease the job over TLS")).toEqual({ name: "over tls" });
    const job = await waitForState(producer, id, "COMPLETED");
    expect(job.attempt).toBe(1);
  } finally {
    await worker.stop();
    await done;
  }
}

describe.skipIf(tlsBroker === undefined)("TLS", () => {
  it("enqueues, leases and acks over TLS, trusting the given CA", async () => {
    await roundTrip(tlsBroker!.url, { ca: pki.ca });
    // The address may also name the broker without a scheme when tls is given.
    const bare = tlsBroker!.url.replace(/^https:\/\//, "");
    expect((await client(bare, { ca: pki.ca }).getQueueStats()).length).toBeGreaterThanOrEqual(0);
  });

  it("checks the broker's certificate against serverName when one is given", async () => {
    const port = new URL(tlsBroker!.url).port;
    // The certificate names 127.0.0.1 and broker.jobwire.test, not other.jobwire.test.
    await client(`https://127.0.0.1:${port}`, { ca: pki.ca, serverName: SERVER_NAME }).getQueueStats();
    const err = await client(`https://127.0.0.1:${port}`, { ca: pki.ca, serverName: "other.jobwire.test" }, 1)
      .getQueueStats()
      .catch((e: unknown) => e);
    expect((err as UnavailableError).code).toBe(Code.Unavailable);
    expect((err as Error).message).toMatch(/other\.jobwire\.test|altnames/i);
  });

  it("refuses a broker whose certificate no trusted CA signed", async () => {
    const err = await client(tlsBroker!.url, undefined, 1)
      .getQueueStats()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toMatch(/^unavailable: .*certificate/i);
  });

  describe("mutual TLS", () => {
    let mtls: BrokerProcess;
    beforeAll(async () => {
      mtls = await startBrokerProcess({ ...tlsEnv, JOBWIRE_TLS_CLIENT_CA: pki.files.ca });
      brokers.push(mtls);
    });

    it("enqueues, leases and acks with a client certificate", async () => {
      await roundTrip(mtls.url, { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey });
    });

    it("lets the client certificate stand in for a token, with the scopes the tokens file maps its subject to", async () => {
      const file = path.join(pki.dir, "tokens.json");
      writeFileSync(file, JSON.stringify({ tokens: [], certificates: [{ name: "ts-fleet", subject: "CN=ts-client", scopes: ["enqueue", "work", "read"] }] }));
      const b = await startBrokerProcess({ ...tlsEnv, JOBWIRE_TLS_CLIENT_CA: pki.files.ca, JOBWIRE_AUTH_FILE: file });
      brokers.push(b);
      const tls = { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey };
      expect(await client(b.url, tls).whoAmI()).toEqual({ authEnabled: true, name: "ts-fleet", scopes: ["enqueue", "work", "read"], queues: ["*"] });
      await roundTrip(b.url, tls);
      const err = await client(b.url, tls, 1)
        .pauseQueue(uniqueQueue("tls"))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PermissionDeniedError);
      expect((err as Error).message).toMatch(/^permission_denied: .*admin/);
    });

    it("is refused without a client certificate", async () => {
      const err = await client(mtls.url, { ca: pki.ca }, 1)
        .enqueue("greet", {}, { queue: uniqueQueue("tls") })
        .catch((e: unknown) => e);
      // The broker refuses the handshake (TLS 1.3's "certificate required" alert): no call got through.
      expect(err).toBeInstanceOf(UnavailableError);
      expect((err as Error).message).toMatch(/^unavailable: .*certificate required/);
    });
  });
});
