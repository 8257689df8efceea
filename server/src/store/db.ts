import pg from "pg";
import { BrokerError } from "../errors.js";

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

/** Connection-level failures: refused, reset, timed out, Postgres shutting down or starting. */
const CONNECTION_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "57P01", "57P02", "57P03", "08000", "08003", "08006"]);

/**
 * True when the database could not be reached, as opposed to a statement
 * that failed on what it was given. The first is worth a retry by the
 * client (UNAVAILABLE); the second is not, and when several callers share a
 * statement, it is the one to isolate (broker/coalescer.ts, the reaper).
 */
export function isConnectionError(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const code = (err as { code?: string }).code ?? "";
  // "not queryable": node-postgres's answer for a client whose connection
  // broke while it sat in the pool (seen during Postgres restarts).
  return (
    CONNECTION_CODES.has(code) ||
    /Connection terminated|timeout exceeded when trying to connect|encountered a connection error and is not queryable/i.test((err as Error).message ?? "")
  );
}

// bigint ids stay strings (int8 would overflow a JS number past 2^53).
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => v);

/** node-postgres's own timestamptz parser, which parseTimestamptz falls back to (and is tested against). */
export const parseTimestamptzSlow = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ) as (v: string) => Date | number | null;

/** Two decimal digits at i, or NaN. */
function two(s: string, i: number): number {
  const a = s.charCodeAt(i) - 48;
  const b = s.charCodeAt(i + 1) - 48;
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : Number.NaN;
}

/**
 * timestamptz as Postgres prints it ("2026-11-24 05:40:36.123456+00", with an
 * offset of +HH, +HH:MM or +HH:MM:SS), read without regular expressions: a
 * claim returns four per job, and the default parser was 5% of the broker's
 * CPU in a burn-down. Anything else (years outside 1000-9999, BC, infinity)
 * goes to the default parser, and the result is the same Date either way
 * (the spec compares them).
 */
export function parseTimestamptz(s: string): Date | number | null {
  // The rows of one claim mostly repeat two instants (one insert's
  // created_at and run_at; now() plus the lease), so the last two texts read
  // are remembered: a new Date from the cached time, never a shared Date.
  if (s === recentText[0]) return new Date(recentTime[0]!);
  if (s === recentText[1]) return new Date(recentTime[1]!);
  const d = parseTimestamptzFresh(s);
  if (d instanceof Date) {
    recentText[recentNext] = s;
    recentTime[recentNext] = d.getTime();
    recentNext ^= 1;
  }
  return d;
}

const recentText = ["", ""];
const recentTime = [0, 0];
let recentNext = 0;

function parseTimestamptzFresh(s: string): Date | number | null {
  const n = s.length;
  if (n < 22 || s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45 || s.charCodeAt(10) !== 32 || s.charCodeAt(13) !== 58 || s.charCodeAt(16) !== 58) {
    return parseTimestamptzSlow(s);
  }
  const year = two(s, 0) * 100 + two(s, 2);
  let i = 19;
  let ms = 0;
  if (s.charCodeAt(i) === 46) {
    const start = i;
    i++;
    while (i < n && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) i++;
    ms = 1000 * Number.parseFloat(s.slice(start, i));
  }
  const sign = s.charCodeAt(i);
  if (year < 1000 || (sign !== 43 && sign !== 45)) return parseTimestamptzSlow(s);
  let offset = two(s, i + 1) * 3600;
  i += 3;
  if (i < n) {
    if (s.charCodeAt(i) !== 58) return parseTimestamptzSlow(s);
    offset += two(s, i + 1) * 60;
    i += 3;
    if (i < n) {
      if (s.charCodeAt(i) !== 58 || i + 3 !== n) return parseTimestamptzSlow(s);
      offset += two(s, i + 1);
    }
  }
  const t = Date.UTC(year, two(s, 5) - 1, two(s, 8), two(s, 11), two(s, 14), two(s, 17), ms);
  if (Number.isNaN(t) || Number.isNaN(offset)) return parseTimestamptzSlow(s);
  return new Date(t - (sign === 45 ? -offset : offset) * 1000);
}
pg.types.setTypeParser(pg.types.builtins.TIMESTAMPTZ, parseTimestamptz);

export type Queryable = Pick<pg.Pool | pg.PoolClient, "query">;

export function createPool(url: string, size: number, onError: (err: Error) => void): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: size,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 10_000,
    application_name: "jobwire",
    // No JIT for the broker's statements: they are short, and the planner
    // switches inside the claim and leased-row functions inflate their cost
    // estimates past jit_above_cost, so a Postgres with JIT on (Debian's,
    // most managed ones) compiled every ack: 45-270 ms instead of 0.27 ms.
    options: "-c jit=off",
  });
  // A connection dying must not crash the process. The pool reports those of
  // idle clients; a client that is checked out between two queries (inside
  // withTx, say) emits the error itself, and with no listener that throws.
  // Seen once in the outage test, when Postgres shut down at that moment.
  // The query in flight, if any, fails on its own and is retried or reported.
  pool.on("error", onError);
  pool.on("connect", (client) => client.on("error", onError));
  return pool;
}

/** A connection failure as the domain's error, which the transport answers with UNAVAILABLE; anything else as it is. */
export function storeError(err: unknown): unknown {
  return isConnectionError(err) ? new BrokerError("unavailable", "the job store is unavailable; retry", undefined, { cause: err }) : err;
}

/** Runs fn in a transaction, retrying it whole on transient errors. */
export async function withTx<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      throw storeError(err);
    }
    try {
      await client.query("BEGIN");
      const out = await fn(client);
      await client.query("COMMIT");
      return out;
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      if (i >= attempts || !isTransient(err)) throw storeError(err);
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
      if (i >= attempts || !isTransient(err)) throw storeError(err);
    }
  }
}
