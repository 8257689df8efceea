import pg from "pg";

/**
 * Postgres error codes worth one more try: the transaction was rolled back
 * as a whole, so running it again is safe. Everything else is either the
 * caller's mistake or a real fault, and retrying would only hide it.
 */
const TRANSIENT_CODES = new Set([
  "40001", // serialization_failure
  "40P01", // deadlock_detected
  "57P03", // cannot_connect_now (server starting up)
]);

export function isTransient(err: unknown): boolean {
  return typeof err === "object" && err !== null && TRANSIENT_CODES.has((err as { code?: string }).code ?? "");
}

// bigint ids stay strings (int8 would overflow a JS number past 2^53).
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => v);

export type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

export function createPool(url: string, size: number, onError: (err: Error) => void): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: size,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 10_000,
    application_name: "jobwire",
  });
  // An idle client's connection dying must not crash the process.
  pool.on("error", onError);
  return pool;
}

/** Runs fn in a transaction, retrying it whole on transient errors. */
export async function withTx<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      const out = await fn(client);
      await client.query("COMMIT");
      return out;
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      if (i >= attempts || !isTransient(err)) throw err;
    } finally {
      client.release();
    }
  }
}

/** Runs one statement, retrying on transient errors. */
export async function query<R extends pg.QueryResultRow>(
  db: Queryable,
  text: string,
  values: unknown[] = [],
  name?: string,
  attempts = 3,
): Promise<pg.QueryResult<R>> {
  for (let i = 1; ; i++) {
    try {
      return await db.query<R>(name ? { name, text, values } : { text, values });
    } catch (err) {
      if (i >= attempts || !isTransient(err)) throw err;
    }
  }
}
