/**
 * `npm run fuzz`: random and mutated requests to every RPC of JobService,
 * WorkerService, AdminService and gRPC reflection, over gRPC, gRPC-Web and
 * Connect (binary and JSON, HTTP/1.1 and HTTP/2), against a real broker on
 * its own Postgres. Targets: no INTERNAL or UNKNOWN answer, no broker
 * crash, no job left stuck, and broker RSS back within 20% of its
 * warmed-up baseline. Exits non-zero when one is missed.
 */
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { allocatorEnv } from "../common/allocator.js";
import { Broker, getBrokerMain, setBrokerMain } from "../common/broker.js";
import { installSignalCleanup, onCleanup, runCleanup } from "../common/cleanup.js";
import { PgCluster, describeSettings, harnessPool } from "../common/postgres.js";
import { sleep } from "../common/util.js";
import { brokerMemory, checkStuck, gc, halfOpen, settleRss, type HalfOpenResult, type RssResult, type StuckResult } from "./after.js";
import { COMBOS, buildCase, restrictFamilies, warmupCase } from "./cases.js";
import { parseFuzzOptions, type FuzzOptions } from "./options.js";
import { PROTOCOLS } from "./protocols.js";
import * as report from "./report.js";
import { RPCS } from "./rpcs.js";
import { Runner } from "./runner.js";
import { collectPools } from "./state.js";
import { Transport } from "./transport.js";
import type { Pools } from "./values.js";
import { hex } from "./wire.js";

/** After the warm-up, wait this long before reading the baseline RSS. */
const WARM_SETTLE_MS = 3_000;
const RSS_SAMPLE_MS = 500;

async function main(): Promise<number> {
  const opts = parseFuzzOptions(process.argv.slice(2));
  if (opts.broker !== null) setBrokerMain(opts.broker);
  if (opts.families.length > 0) restrictFamilies(opts.families);
  if (!existsSync(getBrokerMain())) throw new Error(`${getBrokerMain()} is missing: build with npx tsc -b server clients/typescript`);
  installSignalCleanup();
  const t0 = Date.now();
  const out = (s = "") => process.stdout.write(`${s}\n`);
  const log = (m: string) => out(`  [${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${m}`);

  const runDir = path.join(os.tmpdir(), `jobwire-fuzz-${process.pid}-${Date.now()}`);
  await mkdir(runDir, { recursive: true, mode: 0o755 });
  const pgc = await PgCluster.create(runDir);
  onCleanup(() => pgc.stop("immediate").catch(() => {}));
  const databaseUrl = await pgc.createDatabase("fuzz");
  const alloc = allocatorEnv(opts.allocator);
  const broker = new Broker("fuzz", { DATABASE_URL: databaseUrl, JOBWIRE_LOG_LEVEL: "warn", ...alloc.env }, path.join(runDir, "broker.log"), true);
  onCleanup(() => broker.kill("SIGKILL").catch(() => {}));
  await broker.start();
  const rssStart = broker.rssKiB() ?? 0;
  out(
    `jobwire fuzz${opts.short ? " --short" : ""}: seed ${opts.seed} (--seed ${opts.seed} repeats this run), ` +
      `${RPCS.length} RPCs × ${PROTOCOLS.length} protocols = ${COMBOS.length} pairs, ${opts.lanes} in flight` +
      `${opts.families.length > 0 ? `, families: ${opts.families.join(", ")}` : ""}\n` +
      `broker: ${getBrokerMain()} at ${broker.address}, pid ${broker.pid}, on ${alloc.note}; Postgres ${await pgc.version()} (${describeSettings()})\n` +
      `run directory: ${runDir}${opts.keep ? "" : " (removed at the end; --keep keeps it)"}`,
  );
  const pools = await collectPools(broker.address);
  log(`${pools.jobIds.length} real jobs enqueued, ${pools.tokens.length} leased for their tokens`);

  let transport = new Transport(broker.address);
  try {
    if (opts.replay.length > 0) return await replay(opts, transport, pools, broker);

    const runner = new Runner(() => transport, broker, opts.seed, pools);
    // Warm-up: one valid request per (rpc, protocol), so the baseline RSS has every code path loaded.
    for (let i = 0; i < COMBOS.length; i++) await transport.send(warmupCase(opts.seed, i, pools));
    await sleep(WARM_SETTLE_MS);
    await gc(broker);
    const baseline = broker.rssKiB() ?? rssStart;
    const memBase = await brokerMemory(broker);
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, broker.rssKiB() ?? 0)), RSS_SAMPLE_MS);
    log(`RSS ${(rssStart / 1024).toFixed(1)} MB at start, ${(baseline / 1024).toFixed(1)} MB after the warm-up (after a GC: the baseline)${broker.inspectorUrl ? "" : " [no inspector: no GC]"}; sending up to ${opts.cases} cases for up to ${opts.durationMs / 1000} s`);

    await runner.run(opts.lanes, opts.cases, Date.now() + opts.durationMs, (n) => log(`${n} cases sent; ${[...runner.failures.values()].reduce((a, g) => a + g.count, 0)} INTERNAL/UNKNOWN so far`));
    log(`${runner.sent} cases sent (stopped by ${runner.stoppedBy === "cases" ? "the case count" : "the deadline"})`);

    let half: HalfOpenResult | null = null;
    if (opts.halfOpen > 0 && broker.running) {
      half = await halfOpen(broker.address, broker, opts.halfOpen, opts.halfOpenHoldMs);
      log(`half-sent: ${half.endedByBroker} of ${half.opened} ended by the broker within ${opts.halfOpenHoldMs / 1000} s`);
    }
    if (runner.crashes.length > 0) {
      await runner.findCulprits(Date.now() + (opts.short ? 20_000 : 60_000));
      log("the cases in flight at each crash sent again alone");
    }
    const groups = [...runner.failures.values()];
    const replayed = await runner.replayAlone(groups, Date.now() + (opts.short ? 20_000 : 120_000));
    if (groups.length > 0) log(`${replayed} of ${groups.length} distinct failures sent again alone`);

    let stuck: StuckResult | null = null;
    const pool = harnessPool(databaseUrl);
    try {
      if (broker.running || (await broker.start().then(() => true, () => false))) stuck = await checkStuck(pool, broker.address, opts.drainMs);
    } finally {
      await pool.end().catch(() => {});
    }
    log("stuck-job check done; letting the broker settle");
    transport.close();
    transport = new Transport(broker.address);
    clearInterval(sampler);
    let rss: RssResult | null = null;
    if (broker.running) rss = await settleRss(broker, rssStart, baseline, peak, opts.settleMs, log, memBase);

    const v = report.verdict(runner, stuck, rss);
    out();
    out(`== fuzz summary (${((Date.now() - t0) / 1000).toFixed(0)} s, seed ${opts.seed}, ${runner.sent} cases)`);
    out(report.renderTargets(v, rss, alloc.allocator));
    const mem = report.renderMemory(rss);
    if (mem) out(mem);
    out();
    out("answers by protocol:");
    out(report.renderTraffic(runner));
    out();
    out("by RPC:");
    out(report.renderRpcs(runner));
    out();
    out(`half-sent cases: ${runner.halfSent.sent} (answered before abandoned: ${runner.halfSent.answered})`);
    const h = report.renderHalfOpen(half);
    if (h) out(h);
    out(report.renderStuck(stuck));
    out(report.renderCrashes(runner));
    const brokerLog = broker.logs.top(10);
    if (brokerLog.length > 0) {
      out("broker warnings and errors (the causes it logged):");
      for (const l of brokerLog) out(`  ${l}`);
    }
    out();
    out(report.renderFailures(runner, pools));
    out();
    out(report.renderAnomalies(runner, pools));
    out();
    const rssInformational = opts.rssInformational === "always" || (opts.rssInformational === "on-glibc" && alloc.allocator === "glibc");
    const ok = report.passed(v, rssInformational);
    out(ok ? "fuzz: PASS" : `fuzz: FAIL (${[v.internal > 0 && "INTERNAL/UNKNOWN answers", v.crashes > 0 && "crashes", v.stuck > 0 && "stuck jobs", !v.rssOk && !rssInformational && "RSS"].filter(Boolean).join(", ")})`);
    return ok ? 0 : 1;
  } finally {
    transport.close();
    await broker.stop().catch(() => {});
    broker.close();
    await runCleanup();
    if (!opts.keep) await rm(runDir, { recursive: true, force: true }).catch(() => {});
  }
}

/** --replay: each case alone, the request and the answer in full. */
async function replay(opts: FuzzOptions, transport: Transport, pools: Pools, broker: Broker): Promise<number> {
  for (const index of opts.replay) {
    const c = buildCase(opts.seed, index, pools);
    const r = c.request;
    process.stdout.write(
      `\ncase ${index} (seed ${opts.seed}): ${c.rpc.name} over ${c.protocol.name} (HTTP/${c.protocol.http}), ${c.family}\n` +
        `  input: ${c.description}\n` +
        `  ${r.method} ${r.path.length > 200 ? `${r.path.slice(0, 200)}…` : r.path}\n` +
        Object.entries(r.headers).map(([k, v]) => `  ${k}: ${v.length > 120 ? `${v.slice(0, 120)}…` : v}\n`).join("") +
        `  body (${r.body.length} bytes${r.halfSend ? `, only ${r.halfSend.bytes} sent` : ""}): ${hex(r.body, 512)}\n`,
    );
    const o = await transport.send(c);
    process.stdout.write(`  answer: ${o.code} "${o.message}" (${o.via}${o.httpStatus ? `, HTTP ${o.httpStatus}` : ""})\n`);
    const curl = report.curlLine(c, broker.address);
    if (curl) process.stdout.write(`  curl: ${curl}\n`);
  }
  const errors = broker.logs.top(10);
  if (errors.length > 0) process.stdout.write(`\nbroker warnings and errors:\n${errors.map((l) => `  ${l}`).join("\n")}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    process.stderr.write(`fuzz: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await runCleanup();
    process.exit(2);
  },
);
