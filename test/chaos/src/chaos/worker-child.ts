/**
 * A chaos worker: one process running the TypeScript client's Worker
 * against one broker address. Its handler makes the job's effect durable
 * (one row in chaos.effects per execution) before it returns, so that after
 * SIGKILLs the harness can count executions per job: a worker killed after
 * the INSERT commits and before its ack reaches the broker runs the job
 * again elsewhere, and that shows as a second row.
 *
 * It reports "ready" over IPC once its Lease stream is connected, and runs
 * until SIGTERM (graceful drain) or SIGKILL (the fault).
 */
import { Worker, type WorkerJob } from "@jobwire/client";
import pg from "pg";

export interface WorkerChildSpec {
  address: string;
  databaseUrl: string;
  queue: string;
  workerId: string;
  concurrency: number;
  leaseDurationMs: number;
  /** Each execution waits up to this long before its effect, so kills land mid-job. */
  maxWorkMs: number;
}

const spec = JSON.parse(process.env.CHAOS_WORKER ?? "{}") as WorkerChildSpec;
const pool = new pg.Pool({ connectionString: spec.databaseUrl, max: 4, application_name: spec.workerId, connectionTimeoutMillis: 2000 });
// Postgres restarts break idle connections; the next query gets a new one.
pool.on("error", () => {});

async function effect(job: WorkerJob): Promise<void> {
  await new Promise((r) => setTimeout(r, Math.random() * spec.maxWorkMs));
  await pool.query("INSERT INTO chaos.effects (job_id, attempt, worker) VALUES ($1, $2, $3)", [job.id, job.attempt, spec.workerId]);
}

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
let ready = false;
const worker = new Worker({
  address: spec.address,
  queues: [spec.queue],
  concurrency: spec.concurrency,
  leaseDurationMs: spec.leaseDurationMs,
  workerId: spec.workerId,
  shutdownTimeoutMs: 5_000,
  handleSignals: true,
  logger: process.env.CHAOS_VERBOSE ? undefined : quiet,
  handlers: { chaos: effect, poison: effect },
  onEvent: (e) => {
    if (e.type === "connected" && !ready) {
      ready = true;
      process.send?.({ type: "ready" });
    }
  },
});

worker.run().then(
  async () => {
    await pool.end().catch(() => {});
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`chaos worker ${spec.workerId}: ${String(err)}\n`);
    process.exit(1);
  },
);
