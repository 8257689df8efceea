import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startEmbedded, type EmbeddedPostgres } from "@jobwire/server";
import { startTestBroker, TestLeaseStream, type TestBroker } from "@jobwire/server/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enqueue, ms, stateOf, uniqueQueue } from "./helpers.js";

/**
 * A smoke test on the machine's own Postgres (Debian's package), with its
 * defaults, JIT on among them. The embedded Postgres has no JIT, so no test
 * saw that every ack was JIT-compiled there (issue 14, finding 7): 45-270 ms
 * per ack instead of 0.27 ms. CI installs the package; elsewhere the test
 * skips when no such Postgres is installed.
 */
function debianBinDir(): string | null {
  const base = "/usr/lib/postgresql";
  if (!existsSync(base)) return null;
  const versions = readdirSync(base).filter((v) => existsSync(path.join(base, v, "bin", "pg_ctl"))).sort((a, b) => Number(b) - Number(a));
  return versions.length ? path.join(base, versions[0]!, "bin") : null;
}

const binDir = debianBinDir();
if (!binDir && process.env.CI) throw new Error("CI must run this test: install Debian's postgresql package (.ci/run does)");

describe.skipIf(!binDir)("on Debian's Postgres, JIT on", () => {
  let dir: string;
  let server: EmbeddedPostgres;
  let tb: TestBroker;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "jobwire-debian-"));
    // track = all: the statements inside the SQL functions are where JIT struck.
    server = await startEmbedded({
      dir,
      port: 0,
      binDir: binDir!,
      unsafeFast: true,
      settings: { shared_preload_libraries: "pg_stat_statements", "pg_stat_statements.track": "all" },
    });
    const admin = new pg.Client({ connectionString: server.url("postgres") });
    await admin.connect();
    await admin.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
    await admin.end();
    tb = await startTestBroker({}, { databaseUrl: server.url("postgres") });
  });
  afterAll(async () => {
    await tb?.stop();
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("runs jobs end to end, and no statement of the broker is JIT-compiled", async () => {
    const { rows: jit } = await tb.db.query("SELECT current_setting('jit') AS jit, version() AS v");
    expect(jit[0].v).toMatch(/Debian/);
    // JIT is on for everyone else on this server: a query priced over
    // jit_above_cost compiles.
    const probe = await tb.db.connect();
    try {
      await probe.query("SET jit = on; SET jit_above_cost = 0");
      await probe.query("SELECT sum(i) FROM generate_series(1, 1000) i");
    } finally {
      await probe.query("RESET ALL");
      probe.release();
    }
    await tb.db.query("SELECT pg_stat_statements_reset()");

    const queue = uniqueQueue("debian");
    const ids = await enqueue(tb, ...Array.from({ length: 200 }, () => ({ queue })));
    const s = new TestLeaseStream(tb.workers, { queues: [queue], maxInFlight: 200 });
    const leased = await s.take(200);
    for (let i = 0; i < leased.length; i += 20) {
      const r = await tb.workers.ack({ leaseTokens: leased.slice(i, i + 20).map((l) => l.leaseToken) });
      expect(r.lostLeaseTokens).toEqual([]);
    }
    for (const id of ids.slice(0, 5)) expect(await stateOf(tb, id)).toBe("completed");
    s.kill();

    // The gated claim too (claim_gated.sql and the functions it calls):
    // keys under a per-key cap and a per-key rate limit, and ordering keys.
    const gated = uniqueQueue("debian-gated");
    await tb.admin.setQueueConfig({ queue: gated, maxRunningPerKey: 2, rateLimitPerKey: { count: 1000, period: ms(1000) } });
    await enqueue(
      tb,
      ...Array.from({ length: 120 }, (_, i) => ({ queue: gated, concurrencyKey: `k${i % 40}` })),
      ...Array.from({ length: 20 }, (_, i) => ({ queue: gated, orderingKey: `o${i % 5}` })),
    );
    const g = new TestLeaseStream(tb.workers, { queues: [gated], maxInFlight: 100 });
    for (let done = 0; done < 140; ) {
      const batch = await g.take(1);
      expect((await tb.workers.ack({ leaseTokens: batch.map((l) => l.leaseToken) })).lostLeaseTokens).toEqual([]);
      g.credit(batch.length);
      done += batch.length;
    }
    g.kill();

    const { rows } = await tb.db.query<{ query: string; jit_functions: string; calls: string }>(
      "SELECT query, jit_functions, calls FROM pg_stat_statements WHERE query ~ 'claim_jobs|claim_gated|ack_leases|insert|heartbeat' ORDER BY calls DESC",
    );
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) expect(Number(r.jit_functions), r.query).toBe(0);
    const { rows: control } = await tb.db.query("SELECT sum(jit_functions)::int AS n FROM pg_stat_statements");
    expect(control[0].n).toBe(0);
  });
});
