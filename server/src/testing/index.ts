import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AdminService } from "@jobwire/proto/jobwire/v1/admin_service_pb";
import { JobService } from "@jobwire/proto/jobwire/v1/job_service_pb";
import { WorkerService } from "@jobwire/proto/jobwire/v1/worker_service_pb";
import pg from "pg";
import { startApp, type App } from "../app.js";
import { loadConfig, type Config } from "../config.js";
import { silentLogger, createLogger, type Logger } from "../log.js";
import { startEmbedded, type EmbeddedPostgres } from "../store/embedded.js";
import { migrate } from "../store/migrate.js";

/**
 * Test support, shared by every TypeScript suite: one Postgres server per
 * test run, a migrated template database, and a fresh database cloned from
 * it for each broker (CREATE DATABASE ... TEMPLATE takes a few ms, so tests
 * never share state or clean up after each other).
 *
 * The test run's global setup calls setupTestServer(); it exports the
 * server's admin URL in JOBWIRE_TEST_ADMIN_URL, which worker processes
 * inherit. With TEST_DATABASE_URL set, that server is used instead of an
 * embedded one.
 */

const TEMPLATE = "jobwire_test_template";

export interface TestServer {
  adminUrl: string;
  stop(): Promise<void>;
}

export async function setupTestServer(dataDir: string): Promise<TestServer> {
  let embedded: EmbeddedPostgres | null = null;
  let adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) {
    embedded = await startEmbedded({ dir: dataDir, port: 0, unsafeFast: true, settings: { max_connections: "500" } });
    adminUrl = embedded.url("postgres");
  }
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE}`);
    await admin.query(`CREATE DATABASE ${TEMPLATE}`);
  } finally {
    await admin.end();
  }
  const tpl = new pg.Client({ connectionString: withDatabase(adminUrl, TEMPLATE) });
  await tpl.connect();
  try {
    await migrate(tpl);
  } finally {
    await tpl.end();
  }
  process.env.JOBWIRE_TEST_ADMIN_URL = adminUrl;
  return { adminUrl, stop: async () => void (await embedded?.stop()) };
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

let counter = 0;

/** A new, migrated, empty database; returns its URL. */
export async function createTestDatabase(): Promise<string> {
  const adminUrl = process.env.JOBWIRE_TEST_ADMIN_URL;
  if (!adminUrl) throw new Error("JOBWIRE_TEST_ADMIN_URL is not set: run the tests through vitest (npm test), whose global setup starts Postgres");
  const name = `jw_${process.pid}_${Date.now().toString(36)}_${counter++}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${TEMPLATE}`);
  } finally {
    await admin.end();
  }
  return withDatabase(adminUrl, name);
}

export interface TestBroker {
  app: App;
  url: string;
  databaseUrl: string;
  /** A pool on the broker's database, for assertions and SQL-level setup. */
  db: pg.Pool;
  jobs: Client<typeof JobService>;
  workers: Client<typeof WorkerService>;
  admin: Client<typeof AdminService>;
  stop(): Promise<void>;
}

/** Defaults that keep tests quick: short intervals, loopback, a free port. */
export function testConfig(databaseUrl: string, overrides: Partial<Config> = {}): Config {
  return loadConfig({}, [], {
    host: "127.0.0.1",
    port: 0,
    databaseUrl,
    reaperIntervalMs: 100,
    schedulerIntervalMs: 200,
    pollIntervalMs: 500,
    keepaliveMs: 15_000,
    shutdownTimeoutMs: 2000,
    poolSize: 5,
    ...overrides,
  });
}

export async function startTestBroker(
  overrides: Partial<Config> = {},
  opts: { log?: Logger; databaseUrl?: string; tracing?: boolean } = {},
): Promise<TestBroker> {
  const databaseUrl = opts.databaseUrl ?? (await createTestDatabase());
  const log = opts.log ?? (process.env.JOBWIRE_TEST_LOG ? createLogger("debug") : silentLogger);
  const app = await startApp(testConfig(databaseUrl, overrides), { log, tracing: opts.tracing });
  const transport = createGrpcTransport({ baseUrl: app.url });
  const db = new pg.Pool({ connectionString: databaseUrl, max: 3 });
  // Tests stop databases under brokers (outage.test.ts): a dying connection must not crash the run.
  db.on("error", () => {});
  db.on("connect", (client) => client.on("error", () => {}));
  return {
    app,
    url: app.url,
    databaseUrl,
    db,
    jobs: createClient(JobService, transport),
    workers: createClient(WorkerService, transport),
    admin: createClient(AdminService, transport),
    async stop() {
      await app.stop();
      await db.end();
    },
  };
}

export { Channel, TestLeaseStream, eventually, type OpenOptions } from "./lease.js";
export * from "./factory.js";
