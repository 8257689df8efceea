import { Rng } from "../../common/rng.js";
import { QUEUE, type Fault, type FaultContext } from "../scenario.js";
import { KILL_EVERY_MS, killWorkers } from "./worker-kill.js";

/**
 * A policy inside the documented ranges whose delay overflows at attempt
 * 160: 1000 ms × 100^159 is past float8 (issue 14, finding 1).
 */
const POISON_RETRY = '{"initial_ms":1000,"max_ms":1000,"multiplier":100}';
const POISON_ATTEMPT = 160;

/**
 * The worker-kill fault, plus one poison row inserted by SQL halfway
 * through the load: a RUNNING job whose lease has already expired, at attempt 160
 * with a retry policy whose backoff overflows. The reaper must move past it
 * (dead-letter it, or retry it with a saturated delay) and go on reclaiming
 * every other expired lease, on every queue.
 */
export const poisonRow: Fault = {
  id: "poison-row",
  title: "poison row in the reaper's pass, workers SIGKILLed every 1 s",
  topology: (o) => ({ replicas: 1, workersPerReplica: 4, concurrency: 16, rate: o.short ? 150 : 300, loadMs: o.short ? 12_000 : 30_000 }),
  async run(ctx) {
    // Halfway: the kills before it show the reaper working, the ones after it show it blocked.
    const insertAfter = Math.max(1, Math.round((ctx.loadEndsAt - Date.now()) / KILL_EVERY_MS / 2));
    return killWorkers(ctx, new Rng(ctx.opts.seed, 4), KILL_EVERY_MS, async (n) => {
      if (n === insertAfter) await insertPoison(ctx);
    });
  },
  async checkFixtures(ctx) {
    const problems: string[] = [];
    for (const id of ctx.fixtures.keys()) {
      const { rows } = await ctx.pool.query<{ state: string; attempt: number; expired_ms: number | null; last_error: string | null }>(
        `SELECT state::text, attempt, (extract(epoch FROM now() - lease_expires_at) * 1000)::float8 AS expired_ms,
                errors -> -1 ->> 'message' AS last_error
         FROM jobwire.jobs WHERE id = $1`,
        [id],
      );
      const r = rows[0];
      if (!r) {
        problems.push(`poison row ${id} is gone`);
        continue;
      }
      const desc = `poison row ${id}: ${r.state.toUpperCase()}, attempt ${r.attempt}${r.last_error ? `, last error "${r.last_error.slice(0, 100)}"` : ""}`;
      if (r.state === "completed" || r.state === "dead") ctx.notes.push(`${desc} (the reaper moved past it)`);
      else if (r.state === "running" && r.expired_ms !== null && r.expired_ms > 0)
        problems.push(`${desc}, its lease expired ${(r.expired_ms / 1000).toFixed(1)} s ago and was never reclaimed: the reaper is blocked by it`);
      else problems.push(`${desc}: not in a final state after the drain`);
    }
    return problems;
  },
};

async function insertPoison(ctx: FaultContext): Promise<void> {
  const { rows } = await ctx.pool.query<{ id: string }>(
    `INSERT INTO jobwire.jobs (state, attempt, max_attempts, queue, type, payload, retry,
                               lease_token, lease_expires_at, leased_for_ms, worker_id, run_at)
     VALUES ('running', $2, 200, $1, 'poison', convert_to('{"poison":true}', 'UTF8'), $3::jsonb,
             gen_random_uuid(), now() - interval '1 second', 3000, 'chaos-poison', now())
     RETURNING id::text`,
    [QUEUE, POISON_ATTEMPT, POISON_RETRY],
  );
  const id = rows[0]!.id;
  ctx.fixtures.set(id, "poison");
  ctx.notes.push(`poison row ${id} inserted: RUNNING, lease expired, attempt ${POISON_ATTEMPT}, retry ${POISON_RETRY}`);
  if (ctx.opts.verbose) ctx.log(`inserted poison row ${id}`);
}
