import { startEmbedded, type EmbeddedPostgres } from "@jobwire/server";
import { readFileSync } from "node:fs";
import path from "node:path";
import pg from "pg";

/**
 * One embedded Postgres for the whole run, each system in its own database
 * on it, every system under exactly these settings.
 *
 * Sized for the 2-core, 24 GiB machine the bench targets: everything a run
 * touches (1.1 M job rows at most, about 400 MB with indexes) fits in
 * shared_buffers, checkpoints are pushed out of the measured windows (the
 * bench issues CHECKPOINT between scenarios instead), and JIT is off because
 * it only ever fires on the bench's own verification counts.
 */
export const PG_SETTINGS: Record<string, string> = {
  shared_buffers: "1GB",
  effective_cache_size: "4GB",
  work_mem: "16MB",
  maintenance_work_mem: "256MB",
  max_connections: "200",
  max_wal_size: "8GB",
  min_wal_size: "1GB",
  checkpoint_timeout: "30min",
  wal_buffers: "16MB",
  random_page_cost: "1.1",
  jit: "off",
  // Two cores: a parallel worker would only steal a core from the brokers.
  max_parallel_workers_per_gather: "0",
};

/**
 * fsync off for every system by default: fdatasync on this machine's
 * virtual disk takes ~3.3 ms, so with it on, every commit measures the disk
 * rather than the queue. --durable turns it back on, for all systems alike.
 */
export const UNSAFE_FAST_SETTINGS = { fsync: "off", synchronous_commit: "off", full_page_writes: "off" };

/**
 * Loaded only with --profile: where Postgres spends its time, per statement
 * (pg_stat_statements), and a sample of plans with EXPLAIN (ANALYZE,
 * BUFFERS) detail (auto_explain, into postgres.log, copied to the profiles
 * folder at the end).
 */
const PROFILE_SETTINGS: Record<string, string> = {
  shared_preload_libraries: "pg_stat_statements",
  "pg_stat_statements.max": "1000",
  "pg_stat_statements.track": "all",
};

const AUTO_EXPLAIN: Record<string, string> = {
  session_preload_libraries: "auto_explain",
  "auto_explain.log_min_duration": "5ms",
  "auto_explain.log_analyze": "on",
  "auto_explain.log_buffers": "on",
  "auto_explain.sample_rate": "0.05",
};

export interface BenchPostgres {
  url(db: string): string;
  /** The postmaster's pid, for CPU accounting of it and its backends. */
  pid: number;
  settings: Record<string, string>;
  version: string;
  /** The server log (auto_explain plans land here under --profile). */
  logFile: string;
  createDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

/**
 * With `binDir` (--pg-bin) the bench runs on another installation, such as
 * Debian's, whose builds have JIT compiled in and on by default: `jit` is
 * then left at the server's default, so the run measures what a user of
 * that Postgres gets (a broker whose statements JIT-compiled paid 45-270 ms
 * per ack there; issue 14, finding 7).
 */
export async function startPostgres(dir: string, opts: { durable: boolean; profile: boolean; binDir: string | null }): Promise<BenchPostgres> {
  const { jit: _jit, ...rest } = PG_SETTINGS;
  const settings = { ...(opts.binDir ? rest : PG_SETTINGS), ...(opts.profile ? PROFILE_SETTINGS : {}) };
  const embedded: EmbeddedPostgres = await startEmbedded({ dir, port: 0, unsafeFast: !opts.durable, settings, binDir: opts.binDir ?? undefined });
  const pid = Number(readFileSync(path.join(dir, "pg", "postmaster.pid"), "utf8").split("\n")[0]);
  const admin = new pg.Client({ connectionString: embedded.url("postgres") });
  await admin.connect();
  const server = (await admin.query<{ v: string; jit: string }>("SELECT current_setting('server_version') AS v, current_setting('jit') AS jit")).rows[0]!;
  const version = server.v;
  const effective = { ...settings, jit: server.jit, ...(opts.durable ? { fsync: "on", synchronous_commit: "on", full_page_writes: "on" } : UNSAFE_FAST_SETTINGS) };
  return {
    url: (db) => embedded.url(db),
    pid,
    settings: effective,
    version,
    logFile: path.join(dir, "postgres.log"),
    async createDatabase(name) {
      await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      if (opts.profile) {
        const c = new pg.Client({ connectionString: embedded.url(name) });
        await c.connect();
        await c.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
        for (const [k, v] of Object.entries(AUTO_EXPLAIN)) await c.query(`ALTER DATABASE ${pg.escapeIdentifier(name)} SET ${k} = '${v}'`);
        await c.end();
      }
      return embedded.url(name);
    },
    async stop() {
      await admin.end().catch(() => {});
      await embedded.stop();
    },
  };
}

/** A small pool for the bench's own statements (setup, counts, checks); never on the measured path. */
export function benchPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 4, application_name: "bench" });
  pool.on("error", () => {});
  return pool;
}

/**
 * Between scenarios: write out dirty pages and refresh statistics, so that
 * no scenario pays for the one before it.
 */
export async function settle(pool: pg.Pool, tables: string[]): Promise<void> {
  for (const t of tables) await pool.query(`VACUUM ANALYZE ${t}`);
  await pool.query("CHECKPOINT");
}

export interface StatementStat {
  query: string;
  calls: number;
  totalMs: number;
  meanMs: number;
  rows: number;
  sharedHit: number;
  sharedRead: number;
}

/** Top statements by total execution time since the last reset; [] unless --profile. */
export async function topStatements(pool: pg.Pool, limit = 8): Promise<StatementStat[]> {
  try {
    const { rows } = await pool.query<{
      query: string;
      calls: string;
      total: number;
      mean: number;
      rows: string;
      hit: string;
      read: string;
    }>(
      `SELECT query, calls, total_exec_time AS total, mean_exec_time AS mean, rows,
              shared_blks_hit AS hit, shared_blks_read AS read
       FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND query NOT ILIKE '%pg_stat_statements%'
       ORDER BY total_exec_time DESC LIMIT $1`,
      [limit],
    );
    return rows.map((r) => ({
      query: r.query.replace(/\s+/g, " ").slice(0, 300),
      calls: Number(r.calls),
      totalMs: Math.round(r.total),
      meanMs: Math.round(r.mean * 1000) / 1000,
      rows: Number(r.rows),
      sharedHit: Number(r.hit),
      sharedRead: Number(r.read),
    }));
  } catch {
    return [];
  }
}

export async function resetStatements(pool: pg.Pool): Promise<void> {
  await pool.query("SELECT pg_stat_statements_reset()").catch(() => {});
}
