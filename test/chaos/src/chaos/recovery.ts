/**
 * Recovery times: for each fault event, how long from the fault until the
 * work it disturbed is done. What "done" means is the fault's choice: the
 * jobs a killed worker held are all finished, or a job enqueued after
 * Postgres came back has run. Each watcher polls on its own and gives up at
 * the scenario's drain deadline; an event that never recovers is reported
 * as such.
 */
import type pg from "pg";
import { quantile, sleep } from "../common/util.js";

export interface RecoveryEvent {
  label: string;
  /** When the fault happened (ms since epoch). */
  at: number;
  /** When its work was done, or null (never, within the deadline). */
  recoveredAt: number | null;
  /** A detail for the event list ("12 jobs held", "broker back in 812 ms"). */
  note: string;
}

const POLL_MS = 50;
export const TERMINAL = ["completed", "dead", "cancelled"];

export class RecoveryTracker {
  readonly events: RecoveryEvent[] = [];
  private readonly watchers: Promise<void>[] = [];
  private giveUpAt = Infinity;

  constructor(private readonly pool: pg.Pool) {}

  /** Watches until `done()` is true; `done` errors (Postgres down) count as not yet. */
  watch(event: RecoveryEvent, done: () => Promise<boolean>): void {
    this.events.push(event);
    const w = (async () => {
      while (Date.now() < this.giveUpAt) {
        if (await done().catch(() => false)) {
          event.recoveredAt = Date.now();
          return;
        }
        await sleep(POLL_MS);
      }
    })();
    this.watchers.push(w);
  }

  /** Watches until every job in `ids` has reached a final state. */
  watchJobs(event: RecoveryEvent, ids: string[]): void {
    this.watch(event, async () => {
      if (ids.length === 0) return true;
      const { rows } = await this.pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM jobwire.jobs WHERE id = ANY($1::bigint[]) AND state::text <> ALL($2)",
        [ids, TERMINAL],
      );
      return rows[0]!.n === 0;
    });
  }

  /** The jobs in RUNNING held by any of `workerIds`. */
  async heldBy(workerIds: string[]): Promise<string[]> {
    const { rows } = await this.pool.query<{ id: string }>(
      "SELECT id::text FROM jobwire.jobs WHERE state = 'running' AND worker_id = ANY($1)",
      [workerIds],
    );
    return rows.map((r) => r.id);
  }

  /** Stops every watcher at `at` (the drain deadline) and waits for them. */
  async finish(at: number): Promise<void> {
    this.giveUpAt = at;
    await Promise.all(this.watchers);
  }

  /** "p50 / max" over recovered events, or how many never recovered. */
  summary(): string {
    if (this.events.length === 0) return "—";
    const never = this.events.filter((e) => e.recoveredAt === null).length;
    const times = this.events
      .filter((e) => e.recoveredAt !== null)
      .map((e) => e.recoveredAt! - e.at)
      .sort((a, b) => a - b);
    const fmt = (ms: number) => (ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(1)}s`);
    const parts: string[] = [];
    if (times.length > 0) parts.push(`${fmt(quantile(times, 0.5))}/${fmt(times[times.length - 1]!)}`);
    if (never > 0) parts.push(`never ×${never}`);
    return parts.join(", ");
  }
}
