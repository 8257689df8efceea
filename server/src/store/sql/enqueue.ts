import type pg from "pg";
import type { EnqueueResult, NewJob } from "../../model.js";
import { query, type Queryable } from "../db.js";
import { policyJson } from "./rows.js";

/**
 * Enqueue: a batch of jobs in one INSERT ... SELECT FROM unnest(...).
 *
 * The statement-level trigger (sql/functions/notify_inserted.sql) sends one
 * NOTIFY per queue however many rows a statement inserts.
 */

/** The batch as rows, each with its id drawn from the sequence up front and its due time. */
// Durations travel as bigint milliseconds: as int, anything over 2^31 ms
// (24.86 days; a 30-day delay, say) failed the whole coalesced statement.
const INPUT_CTE = `input AS (
  SELECT nextval('jobwire.job_id_seq') AS id, t.*, coalesce(t.run_at, now() + t.delay_ms * interval '1 millisecond') AS due
  FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::timestamptz[], $6::bigint[], $7::int[], $8::int[],
              $9::int[], $10::jsonb[], $11::text[], $12::bigint[], $13::jsonb[], $14::text[], $15::text[])
       WITH ORDINALITY AS t(queue, type, payload, content_type, run_at, delay_ms, priority, max_attempts,
                            lease_ms, retry, idempotency_key, idempotency_ttl_ms, headers, concurrency_key, ordering_key, ord)
)`;

const INSERT_COLUMNS = `id, queue, type, payload, content_type, state, run_at, queued_at, priority, max_attempts,
                            lease_ms, retry, idempotency_key, idempotency_expires_at, headers, concurrency_key, ordering_key`;

const INSERT_VALUES = `p.id, p.queue, p.type, p.payload, p.content_type,
         CASE WHEN p.due > now() THEN 'scheduled' ELSE 'available' END::jobwire.job_state,
         p.due, p.due, p.priority,
         coalesce(p.max_attempts, q.max_attempts, $16::int),
         p.lease_ms, p.retry, p.idempotency_key,
         CASE WHEN p.idempotency_key IS NOT NULL THEN now() + p.idempotency_ttl_ms * interval '1 millisecond' END,
         p.headers, p.concurrency_key, p.ordering_key
  FROM input p LEFT JOIN jobwire.queues q ON q.name = p.queue
  ORDER BY p.ord`;

/**
 * Inserts a batch without idempotency keys in one statement: nothing can
 * conflict, so every row is inserted and the ids come straight from the
 * input, in order. (The keyed form below, with ON CONFLICT and a join back
 * to what was inserted, took 50% longer per 1000 rows.)
 */
const INSERT_JOBS = `
WITH ${INPUT_CTE}, ins AS (
  INSERT INTO jobwire.jobs (${INSERT_COLUMNS})
  SELECT ${INSERT_VALUES}
)
SELECT i.id FROM input i ORDER BY i.ord`;

/**
 * Inserts a batch with idempotency keys in one statement. A row missing
 * from RETURNING was skipped by ON CONFLICT, i.e. its idempotency key is
 * live.
 */
const INSERT_KEYED_JOBS = `
WITH ${INPUT_CTE}, ins AS (
  INSERT INTO jobwire.jobs (${INSERT_COLUMNS})
  SELECT ${INSERT_VALUES}
  ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL AND NOT idempotency_released DO NOTHING
  RETURNING id
)
SELECT i.id, (ins.id IS NULL) AS duplicate, i.queue, i.idempotency_key
FROM input i LEFT JOIN ins ON ins.id = i.id
ORDER BY i.ord`;

/** Releases keys whose TTL has passed, so a new job may take them. */
const RELEASE_EXPIRED_KEYS = `
UPDATE jobwire.jobs j SET idempotency_released = true
FROM unnest($1::text[], $2::text[]) AS k(queue, key)
WHERE j.queue = k.queue AND j.idempotency_key = k.key
  AND NOT j.idempotency_released AND j.idempotency_expires_at <= now()`;

const FIND_LIVE_KEYS = `
SELECT j.id, j.queue, j.idempotency_key
FROM jobwire.jobs j JOIN unnest($1::text[], $2::text[]) AS k(queue, key)
  ON j.queue = k.queue AND j.idempotency_key = k.key
WHERE NOT j.idempotency_released`;

type InsertRow = { id: string; duplicate: boolean; queue: string; idempotency_key: string | null };

function insertParams(jobs: NewJob[], defaultMaxAttempts: number): unknown[] {
  const n = jobs.length;
  const queue = new Array<string>(n), type = new Array<string>(n), payload = new Array<Buffer>(n);
  const contentType = new Array<string>(n), runAt = new Array<Date | null>(n), delayMs = new Array<number>(n);
  const priority = new Array<number>(n), maxAttempts = new Array<number | null>(n), leaseMs = new Array<number | null>(n);
  const retry = new Array<string | null>(n), key = new Array<string | null>(n), ttl = new Array<number>(n), headers = new Array<string>(n);
  const ckey = new Array<string | null>(n), okey = new Array<string | null>(n);
  jobs.forEach((j, i) => {
    queue[i] = j.queue;
    type[i] = j.type;
    payload[i] = Buffer.from(j.payload.buffer, j.payload.byteOffset, j.payload.byteLength);
    contentType[i] = j.contentType;
    runAt[i] = j.runAt;
    delayMs[i] = j.delayMs ?? 0;
    priority[i] = j.priority;
    maxAttempts[i] = j.maxAttempts;
    leaseMs[i] = j.leaseMs;
    retry[i] = policyJson(j.retry);
    key[i] = j.idempotencyKey;
    ttl[i] = j.idempotencyTtlMs ?? 0;
    headers[i] = JSON.stringify(j.headers);
    ckey[i] = j.concurrencyKey;
    okey[i] = j.orderingKey;
  });
  return [queue, type, payload, contentType, runAt, delayMs, priority, maxAttempts, leaseMs, retry, key, ttl, headers, ckey, okey, defaultMaxAttempts];
}

/**
 * Inserts jobs without idempotency keys: one statement, one round trip.
 * `defaultMaxAttempts` applies where neither the job nor its queue sets one.
 */
export async function insertUnkeyed(db: Queryable, jobs: NewJob[], defaultMaxAttempts: number): Promise<EnqueueResult[]> {
  const { rows } = await query<{ id: string }>(db, INSERT_JOBS, insertParams(jobs, defaultMaxAttempts), "jobwire_insert_jobs");
  return rows.map((r) => ({ jobId: r.id, duplicate: false }));
}

/**
 * Inserts jobs that may carry idempotency keys, on a client inside the
 * caller's transaction: release expired keys, insert (live keys are skipped
 * by ON CONFLICT), then look up the jobs that hold the skipped keys.
 */
export async function insertJobs(c: pg.PoolClient, jobs: NewJob[], defaultMaxAttempts: number): Promise<EnqueueResult[]> {
  const keyed = jobs.filter((j) => j.idempotencyKey !== null);
  const kq = keyed.map((k) => k.queue);
  const kk = keyed.map((k) => k.idempotencyKey);
  if (keyed.length) await c.query({ name: "jobwire_release_keys", text: RELEASE_EXPIRED_KEYS, values: [kq, kk] });
  const { rows } = await c.query<InsertRow>({ name: "jobwire_insert_keyed_jobs", text: INSERT_KEYED_JOBS, values: insertParams(jobs, defaultMaxAttempts) });
  if (!rows.some((r) => r.duplicate)) return rows.map((r) => ({ jobId: r.id, duplicate: false }));
  const live = await c.query<{ id: string; queue: string; idempotency_key: string }>({
    name: "jobwire_find_keys",
    text: FIND_LIVE_KEYS,
    values: [kq, kk],
  });
  const owner = new Map(live.rows.map((r) => [`${r.queue}\u0000${r.idempotency_key}`, r.id]));
  return rows.map((r) => {
    if (!r.duplicate) return { jobId: r.id, duplicate: false };
    const id = owner.get(`${r.queue}\u0000${r.idempotency_key}`);
    if (!id) throw new Error(`idempotency key ${r.idempotency_key} conflicted but no live job holds it`);
    return { jobId: id, duplicate: true };
  });
}
