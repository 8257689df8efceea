import { Rng } from "../../common/rng.js";
import { until, type Fault, type FaultContext } from "../scenario.js";

export const KILL_EVERY_MS = 1_000;

/**
 * SIGKILLs a random chaos worker every `everyMs` and starts a fresh one in
 * its place. Each kill is one recovery event: from the kill until every job
 * the dead worker held has finished elsewhere (its lease expires, the
 * reaper returns it, another worker runs it). Returns how many kills.
 */
export async function killWorkers(ctx: FaultContext, rng: Rng, everyMs: number, onTick?: (n: number) => Promise<void>): Promise<number> {
  let kills = 0;
  let idle = 0;
  let next = Date.now() + everyMs;
  while (await until(ctx, next)) {
    next += everyMs;
    const at = Date.now();
    const id = await ctx.fleet.kill(rng.int(ctx.fleet.size));
    if (id === null) continue;
    kills++;
    const held = await ctx.recovery.heldBy([id]).catch(() => null);
    if (held === null || held.length === 0) idle++;
    else ctx.recovery.watchJobs({ label: `SIGKILL ${id}`, at, recoveredAt: null, note: `${held.length} jobs held` }, held);
    if (ctx.opts.verbose) ctx.log(`killed ${id} holding ${held?.length ?? "?"} jobs`);
    await onTick?.(kills);
  }
  if (idle > 0) ctx.notes.push(`${idle} of ${kills} kills hit a worker that held no job (not counted as recovery events)`);
  return kills;
}

export const workerKill: Fault = {
  id: "worker-kill",
  title: "worker SIGKILL every 1 s",
  topology: (o) => ({ replicas: 1, workersPerReplica: 4, concurrency: 16, rate: o.short ? 150 : 300, loadMs: o.short ? 12_000 : 60_000 }),
  run: (ctx) => killWorkers(ctx, new Rng(ctx.opts.seed, 1), KILL_EVERY_MS),
};
