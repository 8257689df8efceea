import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import type pg from "pg";

/** The numbered SQL files, server/migrations/NNN_name.sql (same path from src/ and dist/). */
const MIGRATIONS_DIR = new URL("../../migrations/", import.meta.url);
/** The live SQL functions, server/sql/functions/*.sql, each a CREATE OR REPLACE. */
const FUNCTIONS_DIR = new URL("../../sql/functions/", import.meta.url);

/** Any constant works, as long as every replica uses the same one. */
const MIGRATION_LOCK_KEY = 0x6a6f6277; // "jobw"

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export async function loadMigrations(): Promise<Migration[]> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
  const out: Migration[] = [];
  for (const file of files) {
    const version = Number(file.slice(0, file.indexOf("_")));
    if (out.some((m) => m.version === version)) throw new Error(`two migrations numbered ${version}`);
    out.push({ version, name: file, sql: await readFile(new URL(file, MIGRATIONS_DIR), "utf8") });
  }
  return out;
}

export interface SqlFunctionFile {
  name: string;
  sql: string;
  sha256: string;
}

export async function loadFunctions(): Promise<SqlFunctionFile[]> {
  const files = (await readdir(FUNCTIONS_DIR)).filter((f) => f.endsWith(".sql")).sort();
  const out: SqlFunctionFile[] = [];
  for (const name of files) {
    const sql = await readFile(new URL(name, FUNCTIONS_DIR), "utf8");
    out.push({ name, sql, sha256: createHash("sha256").update(sql).digest("hex") });
  }
  return out;
}

/**
 * Brings the schema up to date, under an advisory lock so that replicas
 * starting together take turns (the first does the work, the rest find
 * nothing left to do):
 *
 *   1. the numbered migrations not yet recorded, each in its own transaction
 *      (schema changes: tables, columns, indexes, dropping a function whose
 *      signature changes);
 *   2. then every file of server/sql/functions whose text changed since it
 *      was last applied (CREATE OR REPLACE), so that one file shows what
 *      runs. Unchanged files are not re-run: replacing a function
 *      invalidates the plans every other session has cached for it.
 *
 * Returns the migration versions applied.
 */
export async function migrate(client: pg.Client | pg.PoolClient): Promise<number[]> {
  const migrations = await loadMigrations();
  const functions = await loadFunctions();
  await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
  try {
    await client.query(`CREATE SCHEMA IF NOT EXISTS jobwire`);
    await client.query(`CREATE TABLE IF NOT EXISTS jobwire.migrations (
      version int PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    await client.query(`CREATE TABLE IF NOT EXISTS jobwire.functions (
      name text PRIMARY KEY,
      sha256 text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await client.query<{ version: number }>("SELECT version FROM jobwire.migrations");
    const done = new Set(rows.map((r) => r.version));
    const applied: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await inTransaction(client, `migration ${m.name}`, async () => {
        await client.query(m.sql);
        await client.query("INSERT INTO jobwire.migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
      });
      applied.push(m.version);
    }
    const current = await client.query<{ name: string; sha256: string }>("SELECT name, sha256 FROM jobwire.functions");
    const known = new Map(current.rows.map((r) => [r.name, r.sha256]));
    const stale = functions.filter((f) => known.get(f.name) !== f.sha256);
    if (stale.length > 0) {
      // All or none: functions may call each other.
      await inTransaction(client, `SQL functions ${stale.map((f) => f.name).join(", ")}`, async () => {
        for (const f of stale) {
          await client.query(f.sql);
          await client.query(
            `INSERT INTO jobwire.functions (name, sha256) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()`,
            [f.name, f.sha256],
          );
        }
      });
    }
    return applied;
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);
  }
}

async function inTransaction(client: pg.Client | pg.PoolClient, what: string, fn: () => Promise<void>): Promise<void> {
  await client.query("BEGIN");
  try {
    await fn();
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK");
    throw new Error(`${what} failed: ${(err as Error).message}`, { cause: err });
  }
}
