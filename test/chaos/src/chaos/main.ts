/**
 * `npm run chaos`: faults against real processes on loopback (brokers,
 * workers, Postgres), one Jepsen-style table per fault. Exits non-zero on
 * any lost, stuck or unexpected job, a fixture the fault expects to be
 * handled that was not, or a broker crash.
 */
import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { getBrokerMain, setBrokerMain } from "../common/broker.js";
import { installSignalCleanup, onCleanup, runCleanup } from "../common/cleanup.js";
import { PgCluster, describeSettings } from "../common/postgres.js";
import { brokerKill } from "./faults/broker-kill.js";
import { poisonRow } from "./faults/poison-row.js";
import { postgresRestart } from "./faults/postgres-restart.js";
import { workerKill } from "./faults/worker-kill.js";
import { parseChaosOptions } from "./options.js";
import { failed, renderFault, renderSummary } from "./report.js";
import { LEASE_MS, runFault, type Fault, type FaultResult } from "./scenario.js";

const FAULTS: Fault[] = [workerKill, brokerKill, postgresRestart, poisonRow];

async function main(): Promise<number> {
  const opts = parseChaosOptions(process.argv.slice(2));
  const faults = opts.only.length === 0 ? FAULTS : FAULTS.filter((f) => opts.only.includes(f.id));
  if (faults.length === 0) throw new Error(`--only names no fault; the faults are ${FAULTS.map((f) => f.id).join(", ")}`);
  if (opts.broker !== null) setBrokerMain(opts.broker);
  if (!existsSync(getBrokerMain())) throw new Error(`${getBrokerMain()} is missing: build with npx tsc -b server clients/typescript`);
  installSignalCleanup();
  const t0 = Date.now();
  const log = (m: string) => process.stdout.write(`   [${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${m}\n`);

  // 0755 and under /tmp: Postgres runs as the postgres user and must reach it.
  const runDir = path.join(os.tmpdir(), `jobwire-chaos-${process.pid}-${Date.now()}`);
  await mkdir(runDir, { recursive: true, mode: 0o755 });
  const pg = await PgCluster.create(runDir);
  onCleanup(() => pg.stop("immediate").catch(() => {}));
  process.stdout.write(
    `jobwire chaos${opts.short ? " --short" : ""}: seed ${opts.seed}, Postgres ${await pg.version()} (${describeSettings()}), ` +
      `node ${process.version}, ${os.cpus().length} cores\n` +
      `broker: ${getBrokerMain()}; workers: TypeScript client, lease ${LEASE_MS} ms; drain deadline ${opts.drainMs / 1000} s\n` +
      `run directory: ${runDir}${opts.keep ? "" : " (removed at the end; --keep keeps it)"}\n\n`,
  );

  const results: FaultResult[] = [];
  const errors = new Map<string, string>();
  for (const fault of faults) {
    process.stdout.write(`-- ${fault.id}: ${fault.title}\n`);
    try {
      const r = await runFault(fault, pg, runDir, opts, log);
      results.push(r);
      process.stdout.write(`${renderFault(r)}\n\n`);
    } catch (err) {
      const msg = err instanceof Error ? (err.stack ?? err.message) : String(err);
      errors.set(fault.id, msg);
      process.stdout.write(`== ${fault.title}  [${fault.id}]\n   ERROR (the harness could not run this fault): ${msg}\n\n`);
      // Whatever it left running must not leak into the next fault.
      await pg.start().catch(() => {});
    }
  }
  await runCleanup();
  if (!opts.keep) await rm(runDir, { recursive: true, force: true }).catch(() => {});
  process.stdout.write(`== summary (${((Date.now() - t0) / 1000).toFixed(0)} s)\n${renderSummary(results, errors)}\n`);
  const bad = results.filter(failed).map((r) => r.fault.id);
  const verdict = bad.length === 0 && errors.size === 0;
  process.stdout.write(
    verdict ? "chaos: PASS (no lost, stuck or unexpected job)\n" : `chaos: FAIL (${[...bad, ...errors.keys()].join(", ")})\n`,
  );
  return verdict ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  async (err: unknown) => {
    process.stderr.write(`chaos: ${err instanceof Error ? err.message : String(err)}\n`);
    await runCleanup();
    process.exit(2);
  },
);
