import { readdir, readFile } from "node:fs/promises";
import type pg from "pg";

/** The numbered SQL files, server/migrations/NNN_name.sql (same path from src/ and dist/). */
const MIGRATIONS_DIR = new URL("../../migrations/", import.meta.url);

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

/**
 * Applies the migrations not yet recorded, each in its own transaction,
 * under an advisory lock so that replicas starting together take turns: the
 * first applies, the rest find nothing left to do. Returns the versions applied.
 */
export async function migrate(client: pg.Client | pg.PoolClient): Promise<number[]> {
  const migrations = await loadMigrations();
  await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
  try {
    await client.query(`CREATE SCHEMA IF NOT EXISTS jobwire`);
    await client.query(`CREATE TABLE IF NOT EXISTS jobwire.migrations (
      version int PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await client.query<{ version: number }>("SELECT version FROM jobwire.migrations");
    const done = new Set(rows.map((r) => r.version));
    const applied: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await client.query("BEGIN");
      try {
        await client.query(m.sql);
        await client.query("INSERT INTO jobwire.migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK");
        throw new Error(`migration ${m.name} failed: ${(err as Error).message}`, { cause: err });
      }
      applied.push(m.version);
    }
    return applied;
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);
  }
}
