import { Rng } from "../../common/rng.js";
import { sleep } from "../../common/util.js";
import { until, type Fault } from "../scenario.js";

/** How long a killed replica stays down before it is started again (same port). */
const DOWN_MS = 1_000;

/**
 * Three broker replicas on one database, two workers pinned to each and one
 * producer per replica (a producer tries the next replica when its home
 * fails). Every 10 s (5 s with --short) a random replica gets SIGKILL and
 * starts again a second later on the same port. A recovery event lasts from
 * the kill until every job held by the workers pinned to that replica has
 * finished: their leases outlive the stream, so they are acked once the
 * replica is back, or they expire and run elsewhere.
 */
export const brokerKill: Fault = {
  id: "broker-kill",
  title: "broker SIGKILL every 10 s across 3 replicas",
  topology: (o) => ({ replicas: 3, workersPerReplica: 2, concurrency: 16, rate: o.short ? 150 : 300, loadMs: o.short ? 16_000 : 60_000 }),
  async run(ctx) {
    const rng = new Rng(ctx.opts.seed, 2);
    const every = ctx.opts.short ? 5_000 : 10_000;
    if (ctx.opts.short) ctx.notes.push("--short: a kill every 5 s instead of every 10 s");
    let kills = 0;
    let next = Date.now() + every;
    while (await until(ctx, next)) {
      next += every;
      const victim = rng.int(ctx.brokers.length);
      const broker = ctx.brokers[victim]!;
      const at = Date.now();
      await broker.kill("SIGKILL");
      kills++;
      const held = await ctx.recovery.heldBy(ctx.fleet.liveIds(victim)).catch(() => [] as string[]);
      await sleep(DOWN_MS);
      const t = Date.now();
      await broker.start();
      const back = Date.now() - t;
      const note = `restarted after ${DOWN_MS} ms, listening ${back} ms later`;
      if (held.length === 0) ctx.notes.push(`SIGKILL ${broker.name}: its workers held no job (not a recovery event); ${note}`);
      else ctx.recovery.watchJobs({ label: `SIGKILL ${broker.name}`, at, recoveredAt: null, note: `${held.length} jobs held by its workers; ${note}` }, held);
      if (ctx.opts.verbose) ctx.log(`killed ${broker.name}; ${held.length} jobs held by its workers`);
    }
    return kills;
  },
};
