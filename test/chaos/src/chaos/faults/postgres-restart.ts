import { JobwireClient } from "@jobwire/client";
import type { StopMode } from "../../common/postgres.js";
import { sleep } from "../../common/util.js";
import { QUEUE, until, type Fault, type FaultContext } from "../scenario.js";

interface Outage {
  mode: StopMode;
  downMs: number;
}

const SHORT: Outage[] = [
  { mode: "fast", downMs: 1_000 },
  { mode: "immediate", downMs: 1_000 },
];
const FULL: Outage[] = [...SHORT, { mode: "fast", downMs: 10_000 }, { mode: "immediate", downMs: 10_000 }];

/** Each probe try's deadline; tries repeat every PROBE_EVERY_MS. */
const PROBE_TRY_MS = 500;
const PROBE_EVERY_MS = 20;

/**
 * Stops the suite's Postgres mid-load with `pg_ctl stop -m fast` (clients
 * are disconnected, a clean shutdown) and `-m immediate` (every process
 * quits at once, crash recovery on the next start), keeps it down for a
 * while, and starts it again on the same port. Two broker replicas and
 * their workers ride it out. A recovery event lasts from Postgres accepting
 * connections again until a probe job, enqueued through each replica as
 * soon as it answers, has run.
 */
export const postgresRestart: Fault = {
  id: "postgres-restart",
  title: "Postgres restart (pg_ctl stop -m fast, -m immediate) mid-load",
  topology: (o) => ({ replicas: 2, workersPerReplica: 2, concurrency: 16, rate: o.short ? 150 : 300, loadMs: o.short ? 14_000 : 60_000 }),
  async run(ctx) {
    const outages = ctx.opts.short ? SHORT : FULL;
    const gap = (ctx.loadEndsAt - Date.now()) / (outages.length + 1);
    let next = Date.now() + gap;
    let n = 0;
    for (const o of outages) {
      if (!(await until(ctx, next))) break;
      next += gap;
      await ctx.pg.stop(o.mode);
      await sleep(o.downMs);
      await ctx.pg.start();
      probe(ctx, `${o.mode} stop, down ${o.downMs / 1000} s`, ++n);
      if (ctx.opts.verbose) ctx.log(`Postgres back after a ${o.mode} stop`);
    }
    return n;
  },
};

/** One recovery event per replica: enqueue a probe as soon as the replica answers, then wait for it to run. */
function probe(ctx: FaultContext, label: string, n: number): void {
  const at = Date.now();
  ctx.brokers.forEach((broker, i) => {
    const client = new JobwireClient({ address: broker.address, retry: { maxAttempts: 1 } });
    const key = `probe:${n}:${i}`;
    let id: string | null = null;
    let lastTry = 0;
    const event = { label: `${label}, via ${broker.name}`, at, recoveredAt: null, note: "" };
    ctx.recovery.watch(event, async () => {
      if (id === null) {
        if (Date.now() - lastTry < PROBE_EVERY_MS) return false;
        lastTry = Date.now();
        const r = await client.enqueue("chaos", { key }, { queue: QUEUE, idempotencyKey: key, timeoutMs: PROBE_TRY_MS });
        id = r.id;
        ctx.producers.ledger.ack(key, r.id);
        event.note = `the broker acknowledged an enqueue ${Date.now() - at} ms after Postgres was back`;
        return false;
      }
      const { rows } = await ctx.pool.query<{ state: string }>("SELECT state::text FROM jobwire.jobs WHERE id = $1", [id]);
      const done = rows[0]?.state === "completed";
      if (done) client.close();
      return done;
    });
  });
}
