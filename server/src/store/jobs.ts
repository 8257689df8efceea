import type pg from "pg";
import type {
  EnqueueResult,
  Job,
  JobError,
  JobState,
  ListFilter,
  NewJob,
  QueueConfig,
  QueueStats,
  ReplayFilter,
  RetryPolicy,
} from "../model.js";
import { JOB_STATES } from "../model.js";
import { DEFAULT_COMPLETED_RETENTION_MS } from "../config.js";
import { query, withTx } from "./db.js";

/**
 * JobStore owns every statement that touches jobwire.jobs. Each state
 * transition names the state it starts from (and, for leased jobs, the
 * fencing token), so a stale or repeated write matches no row and changes
 * nothing. Statements run as named, prepared queries.
 */

/** A lease as the store sees it: the row id and the token's random part. */
export interface LeaseRef {
  id: string;
  token: string;
}

export interface ClaimedJob {
  job: Job;
  token: string;
  expiresAt: Date;
}

export interface FailedJob {
  id: string;
  queue: string;
  state: JobState;
  runAt: Date;
  headers: Record<string, string>;
  attempt: number;
}

interface JobRow {
  id: string;
  queue: string;
  type: string;
  payload: Buffer;
  content_type: string;
  state: JobState;
  priority: number;
  attempt: number;
  max_attempts: number;
  run_at: Date;
  created_at: Date;
  finished_at: Date | null;
  headers: Record<string, string>;
  idempotency_key: string | null;
  errors: { attempt: number; message: string; at: string; worker_id: string | null }[];
  lease_expires_at: Date | null;
  lease_ms: number | null;
  cancel_requested: boolean;
  worker_id: string | null;
  lease_token?: string | null;
}

const JOB_COLUMNS = `id, queue, type, payload, content_type, state, priority, attempt, max_attempts, run_at,
  created_at, finished_at, headers, idempotency_key, errors, lease_expires_at, lease_ms, cancel_requested, worker_id`;
const JOB_COLUMNS_J = JOB_COLUMNS.split(",")
  .map((c) => "j." + c.trim())
  .join(", ");

function jobErrors(errors: JobRow["errors"]): JobError[] {
  return errors.map((e): JobError => ({ attempt: e.attempt, message: e.message, at: new Date(e.at), workerId: e.worker_id ?? "" }));
}

function toJob(r: JobRow): Job {
  return {
    id: r.id,
    queue: r.queue,
    type: r.type,
    payload: r.payload,
    contentType: r.content_type,
    state: r.state,
    priority: r.priority,
    attempt: r.attempt,
    maxAttempts: r.max_attempts,
    runAt: r.run_at,
    createdAt: r.created_at,
    finishedAt: r.finished_at,
    headers: r.headers,
    idempotencyKey: r.idempotency_key,
    errors: jobErrors(r.errors),
    leaseExpiresAt: r.lease_expires_at,
    leaseMs: r.lease_ms,
    cancelRequested: r.cancel_requested,
    workerId: r.worker_id,
  };
}

function policyJson(p: RetryPolicy | null): string | null {
  if (!p) return null;
  const o: Record<string, number> = {};
  if (p.initialMs !== undefined) o.initial_ms = p.initialMs;
  if (p.maxMs !== undefined) o.max_ms = p.maxMs;
  if (p.multiplier !== undefined) o.multiplier = p.multiplier;
  if (p.jitter !== undefined) o.jitter = p.jitter;
  return Object.keys(o).length ? JSON.stringify(o) : null;
}

// ---------------------------------------------------------------------------
// Enqueue

/** The batch as rows, each with its id drawn from the sequence up front and its due time. */
const INPUT_CTE = `input AS (
  SELECT nextval('jobwire.job_id_seq') AS id, t.*, coalesce(t.run_at, now() + t.delay_ms * interval '1 millisecond') AS due
  FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::timestamptz[], $6::int[], $7::int[], $8::int[],
              $9::int[], $10::jsonb[], $11::text[], $12::int[], $13::jsonb[])
       WITH ORDINALITY AS t(queue, type, payload, content_type, run_at, delay_ms, priority, max_attempts,
                            lease_ms, retry, idempotency_key, idempotency_ttl_ms, headers, ord)
)`;

const INSERT_COLUMNS = `id, queue, type, payload, content_type, state, run_at, priority, max_attempts,
                            lease_ms, retry, idempotency_key, idempotency_expires_at, headers`;

const INSERT_VALUES = `p.id, p.queue, p.type, p.payload, p.content_type,
         CASE WHEN p.due > now() THEN 'scheduled' ELSE 'available' END::jobwire.job_state,
         p.due, p.priority,
         coalesce(p.max_attempts, q.max_attempts, 25),
         p.lease_ms, p.retry, p.idempotency_key,
         CASE WHEN p.idempotency_key IS NOT NULL THEN now() + p.idempotency_ttl_ms * interval '1 millisecond' END,
         p.headers
  FROM input p LEFT JOIN jobwire.queues q ON q.name = p.queue
  ORDER BY p.ord`;

/**
 * Inserts a batch without idempotency keys in one statement: nothing can
 * conflict, so every row is inserted and the ids come straight from the
 * input, in order. (The keyed form below, with ON CONFLICT and a join back
 * to what was inserted, took 50% longer per 1000 rows.) The statement-level
 * trigger sends one NOTIFY per queue.
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

// ---------------------------------------------------------------------------
// Leasing

/**
 * Claims up to $2 available jobs from the queues in $1 for one stream: a SQL
 * function (migrations/004_claim_function.sql), planned once per session.
 * A row is claimed by exactly one statement: FOR UPDATE SKIP LOCKED, and
 * the lock re-checks state = 'available'.
 *
 * Its UPDATE once found the claimed rows through a join to the CTE that
 * locked them; once the backlog grew, Postgres hashed a sequential scan of
 * the whole table for it: 43 ms per 500-job claim over 50,000 available
 * jobs, against ~5 ms with the rows passed as an array (of ids then, of
 * row addresses now).
 */
const CLAIM = "SELECT * FROM jobwire.claim_jobs($1::text[], $2::int, $3::int, $4::int, $5::text)";

/** A claimed row: the columns claim_jobs returns (what the claim did not set itself; errors null when empty). */
type ClaimRow = Omit<JobRow, "state" | "finished_at" | "cancel_requested" | "worker_id" | "errors"> & {
  errors: JobRow["errors"] | null;
  lease_token: string;
};

/**
 * A claimed row as a Job, with what the claim set filled in. Written out
 * field by field like toJob on purpose: building it from the row with an
 * object spread, or filling the row in place and calling toJob, each raised
 * the broker's CPU per job in a burn-down from 21 to 33 us.
 */
function claimedJob(r: ClaimRow, workerId: string): Job {
  return {
    id: r.id,
    queue: r.queue,
    type: r.type,
    payload: r.payload,
    contentType: r.content_type,
    state: "running",
    priority: r.priority,
    attempt: r.attempt,
    maxAttempts: r.max_attempts,
    runAt: r.run_at,
    createdAt: r.created_at,
    finishedAt: null,
    headers: r.headers,
    idempotencyKey: r.idempotency_key,
    errors: r.errors === null ? [] : jobErrors(r.errors),
    leaseExpiresAt: r.lease_expires_at,
    leaseMs: r.lease_ms,
    cancelRequested: false,
    workerId,
  };
}

/** Delivery order: priority first (higher first), then due time, then id. */
function claimOrder(a: ClaimRow, b: ClaimRow): number {
  return b.priority - a.priority || a.run_at.getTime() - b.run_at.getTime() || cmpId(a.id, b.id);
}

/**
 * Ack, heartbeat and release are SQL functions (migrations/003_leased_rows.sql):
 * they lock rows in id order, so that two of them over the same rows cannot
 * deadlock, and they find rows by primary key with no join, at O(tokens).
 */
/** Returns the ids it could not ack (see migrations/005_retention.sql). */
const ACK = "SELECT lost_id AS id FROM jobwire.ack_leases($1::bigint[], $2::uuid[], $3::bigint)";
const HEARTBEAT = "SELECT id, lease_expires_at, cancel_requested FROM jobwire.heartbeat_leases($1::bigint[], $2::uuid[], $3::int)";
const RELEASE = "SELECT id, queue FROM jobwire.release_leases($1::bigint[], $2::uuid[])";

/** A statement's worth of leases: ids distinct; at[k] is the input index of ids[k]. */
interface LeaseRound {
  ids: string[];
  tokens: string[];
  at: number[];
}

/** An id as Postgres prints it: "007" is job 7. */
function canonicalId(id: string): string {
  return id.length > 1 && id.charCodeAt(0) === 48 ? BigInt(id).toString() : id;
}

/**
 * Splits leases into rounds in which every id appears once (see
 * 003_leased_rows.sql for why). Almost every call is one round. No sorting
 * is needed for lock order: the functions' index scans visit the ids in
 * ascending order.
 */
function leasedRounds(leases: LeaseRef[]): LeaseRound[] {
  const rounds: LeaseRound[] = [];
  const seen = new Map<string, number>();
  for (let i = 0; i < leases.length; i++) {
    const l = leases[i]!;
    const id = canonicalId(l.id);
    const k = seen.get(id) ?? 0;
    seen.set(id, k + 1);
    const r = (rounds[k] ??= { ids: [], tokens: [], at: [] });
    r.ids.push(id);
    r.tokens.push(l.token);
    r.at.push(i);
  }
  return rounds;
}

const DIGITS = /^[0-9]+$/;
const UUID = /^[0-9a-fA-F-]{36}$/;

/**
 * An array parameter as a Postgres array literal when every element is
 * plain (digits, uuids), which needs no quoting; node-postgres would escape
 * each element with two regular expressions. Anything else goes as an array.
 */
function arrayParam(values: string[], plain: RegExp): string | string[] {
  for (const v of values) if (!plain.test(v)) return values;
  return `{${values.join(",")}}`;
}

/**
 * The one rule for a failed attempt, shared by Nack and the reaper:
 * cancel-requested jobs become cancelled; permanent failures and exhausted
 * attempts become dead; the rest wait out their backoff as retryable (or go
 * straight to available when the wait is zero). The error joins the history.
 * Used through failStatement() below.
 */
const FAIL_SET = `
SET state = d.next_state,
    run_at = CASE WHEN d.next_state IN ('retryable', 'available') THEN d.next_run_at ELSE j.run_at END,
    finished_at = CASE WHEN d.next_state IN ('dead', 'cancelled') THEN now() END,
    errors = j.errors || jsonb_build_array(jsonb_build_object(
      'attempt', j.attempt, 'message', d.message, 'at', now(), 'worker_id', j.worker_id)),
    lease_token = NULL, lease_expires_at = NULL`;

// The decision, per failed row: where it goes next and when.
const FAIL_DECIDE = `
  SELECT f.id, f.message, r.next_run_at,
         CASE WHEN j.cancel_requested THEN 'cancelled'
              WHEN f.permanent OR j.attempt >= j.max_attempts THEN 'dead'
              WHEN r.next_run_at <= now() THEN 'available'
              ELSE 'retryable' END::jobwire.job_state AS next_state
  FROM failures f JOIN jobwire.jobs j ON j.id = f.id
  CROSS JOIN LATERAL (
    SELECT now() + coalesce(f.retry_after_ms * interval '1 millisecond',
                            jobwire.retry_delay(j.attempt, j.retry, (SELECT q.retry FROM jobwire.queues q WHERE q.name = j.queue))) AS next_run_at
  ) r`;

/** A failed-attempt statement: `failures` selects (and locks) the rows, with id, permanent, retry_after_ms, message. */
function failStatement(failures: string): string {
  return `
WITH failures AS (${failures}), d AS (${FAIL_DECIDE})
UPDATE jobwire.jobs j ${FAIL_SET}
FROM d WHERE j.id = d.id
RETURNING j.id, j.queue, j.state, j.run_at, j.headers, j.attempt`;
}

const NACK = failStatement(`
  SELECT j.id, $3::bool AS permanent, $4::int AS retry_after_ms, $5::text AS message
  FROM jobwire.jobs j
  WHERE j.id = $1 AND j.state = 'running' AND j.lease_token = $2
  FOR UPDATE`);

/**
 * The reaper: leases past their expiry fail their attempt with "lease
 * expired". Batched, and SKIP LOCKED so replicas split the work.
 */
const REAP = failStatement(`
  SELECT j.id, false AS permanent, NULL::int AS retry_after_ms, 'lease expired' AS message
  FROM jobwire.jobs j
  WHERE j.state = 'running' AND j.lease_expires_at < now()
  ORDER BY j.id
  LIMIT $1
  FOR UPDATE SKIP LOCKED`);

/** Promotes due scheduled and retryable jobs, and wakes their queues. */
const PROMOTE_DUE = `
WITH due AS (
  SELECT id FROM jobwire.jobs
  WHERE state IN ('scheduled', 'retryable') AND run_at <= now()
  ORDER BY run_at
  LIMIT $1
  FOR UPDATE SKIP LOCKED
), moved AS (
  UPDATE jobwire.jobs j SET state = 'available' FROM due WHERE j.id = due.id RETURNING j.queue
)
SELECT m.queue, m.n, pg_notify('jobwire', 'a:' || m.queue) AS notified
FROM (SELECT queue, count(*)::int AS n FROM moved GROUP BY queue) m`;

/** Milliseconds until the next scheduled or retryable job is due, by the database's clock. */
const NEXT_DUE = `
SELECT extract(epoch FROM min(run_at) - now()) * 1000 AS ms
FROM jobwire.jobs WHERE state IN ('scheduled', 'retryable')`;

// ---------------------------------------------------------------------------
// Producers and operators

const GET_JOB = `SELECT ${JOB_COLUMNS} FROM jobwire.jobs WHERE id = $1`;

/** Waiting jobs are cancelled at once; a running one is asked to stop. */
const CANCEL = `
UPDATE jobwire.jobs
SET state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
    cancel_requested = (state = 'running'),
    finished_at = CASE WHEN state = 'running' THEN NULL ELSE now() END
WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable', 'running')
RETURNING ${JOB_COLUMNS}`;

/**
 * Replay: a fresh attempt budget, the error history kept. The state check
 * makes it idempotent: a job already replayed is no longer dead.
 */
const REPLAY_IDS = `
WITH target AS (
  SELECT id FROM jobwire.jobs WHERE id = ANY($1::bigint[]) AND state = ANY($2::jobwire.job_state[])
  ORDER BY id FOR UPDATE SKIP LOCKED
), moved AS (
  UPDATE jobwire.jobs j
  SET state = 'available', attempt = 0, run_at = now(), finished_at = NULL, cancel_requested = false,
      lease_token = NULL, lease_expires_at = NULL, worker_id = NULL
  FROM target WHERE j.id = target.id
  RETURNING j.id, j.queue, j.headers
)
SELECT m.id, m.queue, m.headers, pg_notify('jobwire', 'a:' || m.queue) AS notified FROM moved m`;

// "state IN ('dead', 'cancelled')" is implied by $2 (always a subset) but
// written out, so that a plan made without $2's value (a prepared
// statement's generic plan) can still prove it and read jobs_finished_idx
// instead of the whole history.
const SELECT_REPLAYABLE = `
SELECT id FROM jobwire.jobs j
WHERE j.queue = $1 AND j.state IN ('dead', 'cancelled') AND j.state = ANY($2::jobwire.job_state[])
  AND ($3::text IS NULL OR j.type = $3)
  AND ($4::text IS NULL OR strpos(j.errors -> -1 ->> 'message', $4) > 0)
  AND ($5::timestamptz IS NULL OR j.finished_at >= $5)
  AND ($6::timestamptz IS NULL OR j.finished_at < $6)
  AND j.id > $7::bigint
ORDER BY j.id
LIMIT $8`;

const LIST_JOBS = `
SELECT ${JOB_COLUMNS} FROM jobwire.jobs
WHERE ($1::text IS NULL OR queue = $1)
  AND ($2::text IS NULL OR type = $2)
  AND (cardinality($3::jobwire.job_state[]) = 0 OR state = ANY($3::jobwire.job_state[]))
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5`;

const QUEUE_COUNTS = `
SELECT queue, state, count(*)::bigint AS n FROM jobwire.jobs
WHERE cardinality($1::text[]) = 0 OR queue = ANY($1::text[])
GROUP BY queue, state`;

const OLDEST_AVAILABLE = `
SELECT queue, extract(epoch FROM now() - min(run_at)) * 1000 AS age_ms FROM jobwire.jobs
WHERE state = 'available' AND (cardinality($1::text[]) = 0 OR queue = ANY($1::text[]))
GROUP BY queue`;

/**
 * Backlog gauges: only states with a partial index, never the completed
 * history. One arm per partial index, each with exactly its predicate: as
 * one "state IN (...)" over five states, no index matched it and every
 * scrape read the whole table, history included (plans.spec.ts).
 */
const METRIC_COUNTS = `
SELECT queue, state::text, count(*)::int AS n FROM jobwire.jobs
WHERE state IN ('scheduled', 'retryable') GROUP BY queue, state
UNION ALL
SELECT queue, 'available', count(*)::int FROM jobwire.jobs WHERE state = 'available' GROUP BY queue
UNION ALL
SELECT queue, 'running', count(*)::int FROM jobwire.jobs WHERE state = 'running' GROUP BY queue
UNION ALL
SELECT queue, 'dead', count(*)::int FROM jobwire.jobs WHERE state IN ('dead', 'cancelled') AND state = 'dead' GROUP BY queue`;

const UPSERT_QUEUE = `
INSERT INTO jobwire.queues (name, max_attempts, lease_ms, retry, completed_retention_ms, updated_at) VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (name) DO UPDATE SET max_attempts = EXCLUDED.max_attempts, lease_ms = EXCLUDED.lease_ms,
  retry = EXCLUDED.retry, completed_retention_ms = EXCLUDED.completed_retention_ms, updated_at = now()`;


type InsertRow = { id: string; duplicate: boolean; queue: string; idempotency_key: string | null };

function insertParams(jobs: NewJob[]): unknown[] {
  const n = jobs.length;
  const queue = new Array<string>(n), type = new Array<string>(n), payload = new Array<Buffer>(n);
  const contentType = new Array<string>(n), runAt = new Array<Date | null>(n), delayMs = new Array<number>(n);
  const priority = new Array<number>(n), maxAttempts = new Array<number | null>(n), leaseMs = new Array<number | null>(n);
  const retry = new Array<string | null>(n), key = new Array<string | null>(n), ttl = new Array<number>(n), headers = new Array<string>(n);
  jobs.forEach((j, i) => {
    queue[i] = j.queue;
    type[i] = j.type;
    payload[i] = Buffer.from(j.payload.buffer, j.payload.byteOffset, j.payload.byteLength);
    contentType[i] = j.contentType;
    runAt[i] = j.runAt;
    delayMs[i] = j.delayMs;
    priority[i] = j.priority;
    maxAttempts[i] = j.maxAttempts;
    leaseMs[i] = j.leaseMs;
    retry[i] = policyJson(j.retry);
    key[i] = j.idempotencyKey;
    ttl[i] = j.idempotencyTtlMs;
    headers[i] = JSON.stringify(j.headers);
  });
  return [queue, type, payload, contentType, runAt, delayMs, priority, maxAttempts, leaseMs, retry, key, ttl, headers];
}

/**
 * Inserts jobs that carry idempotency keys, on a client inside the caller's
 * transaction: release expired keys, insert (live keys are skipped by ON
 * CONFLICT), then look up the jobs that hold the skipped keys.
 */
export async function insertJobs(c: pg.PoolClient, jobs: NewJob[]): Promise<EnqueueResult[]> {
  const keyed = jobs.filter((j) => j.idempotencyKey !== null);
  const kq = keyed.map((k) => k.queue);
  const kk = keyed.map((k) => k.idempotencyKey);
  if (keyed.length) await c.query({ name: "jobwire_release_keys", text: RELEASE_EXPIRED_KEYS, values: [kq, kk] });
  const { rows } = await c.query<InsertRow>({ name: "jobwire_insert_keyed_jobs", text: INSERT_KEYED_JOBS, values: insertParams(jobs) });
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

/**
 * Completed jobs due for pruning (migrations/005_retention.sql), oldest
 * first. SKIP LOCKED, so replicas split the work and the pruner never waits
 * on a row another statement holds.
 */
const PRUNE_COMPLETED = `
WITH doomed AS (
  SELECT ctid FROM jobwire.jobs
  WHERE state = 'completed' AND prune_at <= now()
  ORDER BY prune_at
  LIMIT $1
  FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM jobwire.jobs j WHERE j.ctid = ANY (ARRAY(SELECT ctid FROM doomed)) RETURNING 1
)
SELECT count(*)::int AS n FROM gone`;

export interface JobStoreOptions {
  /**
   * How long a completed job stays as history when its queue sets no
   * retention of its own; 0 deletes it in the ack.
   */
  completedRetentionMs: number;
}

export const DEFAULT_STORE_OPTIONS: JobStoreOptions = { completedRetentionMs: DEFAULT_COMPLETED_RETENTION_MS };

export class JobStore {
  constructor(
    readonly pool: pg.Pool,
    private readonly opts: JobStoreOptions = DEFAULT_STORE_OPTIONS,
  ) {}

  async enqueue(jobs: NewJob[]): Promise<EnqueueResult[]> {
    if (jobs.every((j) => j.idempotencyKey === null)) {
      // The common path: one statement, one round trip.
      const { rows } = await query<InsertRow>(this.pool, INSERT_JOBS, insertParams(jobs), "jobwire_insert_jobs");
      return rows.map((r) => ({ jobId: r.id, duplicate: false }));
    }
    return withTx(this.pool, (c) => insertJobs(c, jobs));
  }

  async claim(queues: string[], limit: number, workerId: string, workerLeaseMs: number | null, defaultLeaseMs: number): Promise<ClaimedJob[]> {
    const { rows } = await query<ClaimRow>(this.pool, CLAIM, [queues, limit, workerLeaseMs, defaultLeaseMs, workerId], "jobwire_claim");
    // RETURNING has no defined order; deliver in claim order. It usually
    // comes back in that order already (primary-key order, one priority):
    // check in one pass before sorting.
    let sorted = true;
    for (let i = 1; i < rows.length && sorted; i++) sorted = claimOrder(rows[i - 1]!, rows[i]!) <= 0;
    if (!sorted) rows.sort(claimOrder);
    return rows.map((r) => ({ job: claimedJob(r, workerId), token: r.lease_token, expiresAt: r.lease_expires_at! }));
  }

  async release(leases: LeaseRef[]): Promise<string[]> {
    const queues = new Set<string>();
    await this.leased<{ queue: string }>(RELEASE, "jobwire_release", leases, [], (r) => queues.add(r.queue));
    return [...queues];
  }

  /** Completes the leases that are still current; acked[i] tells leases[i]. */
  async ack(leases: LeaseRef[]): Promise<boolean[]> {
    const acked = new Array<boolean>(leases.length).fill(true);
    // The statement names the leases it could not ack.
    await this.leased(ACK, "jobwire_ack", leases, [this.opts.completedRetentionMs], (_, i) => (acked[i] = false));
    return acked;
  }

  /** Extends the leases that are still current; extended[i] tells leases[i] (null: lost). */
  async heartbeat(leases: LeaseRef[], extendMs: number | null): Promise<({ expiresAt: Date; cancelRequested: boolean } | null)[]> {
    const extended = new Array<{ expiresAt: Date; cancelRequested: boolean } | null>(leases.length).fill(null);
    type Row = { lease_expires_at: Date; cancel_requested: boolean };
    await this.leased<Row>(HEARTBEAT, "jobwire_heartbeat", leases, [extendMs], (r, i) => {
      extended[i] = { expiresAt: r.lease_expires_at, cancelRequested: r.cancel_requested };
    });
    return extended;
  }

  /**
   * Runs a leased-row function once per round (see leasedRounds) and calls
   * each(row, i) for every row it returns, i being the row's index in leases.
   */
  private async leased<R extends object>(
    sql: string,
    name: string,
    leases: LeaseRef[],
    extra: unknown[],
    each: (row: R, i: number) => void,
  ): Promise<void> {
    for (const round of leasedRounds(leases)) {
      const params = [arrayParam(round.ids, DIGITS), arrayParam(round.tokens, UUID), ...extra];
      const { rows } = await query<R & { id: string }>(this.pool, sql, params, name);
      if (rows.length === 0) continue;
      const index = new Map<string, number>();
      for (let k = 0; k < round.ids.length; k++) index.set(round.ids[k]!, round.at[k]!);
      for (const r of rows) each(r, index.get(r.id)!);
    }
  }

  /** The ids among `ids` that are in one of `states`. */
  async filterIds(ids: string[], states: JobState[]): Promise<string[]> {
    const { rows } = await query<{ id: string }>(
      this.pool,
      "SELECT id FROM jobwire.jobs WHERE id = ANY($1::bigint[]) AND state = ANY($2::jobwire.job_state[]) ORDER BY id",
      [ids, states],
      "jobwire_filter_ids",
    );
    return rows.map((r) => r.id);
  }

  /** Fails one attempt; null when the lease is not current. */
  async nack(lease: LeaseRef, message: string, permanent: boolean, retryAfterMs: number | null): Promise<FailedJob | null> {
    const { rows } = await query<FailedRow>(
      this.pool,
      NACK,
      [lease.id, lease.token, permanent, retryAfterMs, message],
      "jobwire_nack",
    );
    return rows[0] ? toFailed(rows[0]) : null;
  }

  /** Deletes up to `limit` completed jobs whose retention has passed; returns how many. */
  async pruneCompleted(limit: number): Promise<number> {
    const { rows } = await query<{ n: number }>(this.pool, PRUNE_COMPLETED, [limit], "jobwire_prune_completed");
    return rows[0]?.n ?? 0;
  }

  async reapExpired(limit: number): Promise<FailedJob[]> {
    const { rows } = await query<FailedRow>(this.pool, REAP, [limit], "jobwire_reap");
    return rows.map(toFailed);
  }

  /** Moves due jobs to available; returns how many per queue. */
  async promoteDue(limit: number): Promise<Map<string, number>> {
    const { rows } = await query<{ queue: string; n: number }>(this.pool, PROMOTE_DUE, [limit], "jobwire_promote");
    return new Map(rows.map((r) => [r.queue, r.n]));
  }

  /** Milliseconds until the next job is due (negative if overdue), or null when none waits. */
  async msUntilNextDue(): Promise<number | null> {
    const { rows } = await query<{ ms: string | null }>(this.pool, NEXT_DUE, [], "jobwire_next_due");
    const ms = rows[0]?.ms;
    return ms === null || ms === undefined ? null : Number(ms);
  }

  async notify(queue: string): Promise<void> {
    await query(this.pool, "SELECT pg_notify('jobwire', $1)", ["a:" + queue], "jobwire_notify");
  }

  async get(id: string): Promise<Job | null> {
    const { rows } = await query<JobRow>(this.pool, GET_JOB, [id], "jobwire_get_job");
    return rows[0] ? toJob(rows[0]) : null;
  }

  /** Returns the job after the change, or null when nothing was cancellable. */
  async cancel(id: string): Promise<Job | null> {
    const { rows } = await query<JobRow>(this.pool, CANCEL, [id], "jobwire_cancel");
    return rows[0] ? toJob(rows[0]) : null;
  }

  async replayIds(ids: string[], states: JobState[]): Promise<{ id: string; queue: string; headers: Record<string, string> }[]> {
    if (ids.length === 0) return [];
    const { rows } = await query<{ id: string; queue: string; headers: Record<string, string> }>(
      this.pool,
      REPLAY_IDS,
      [ids, states],
      "jobwire_replay_ids",
    );
    return rows;
  }

  async selectReplayable(f: ReplayFilter, states: JobState[], afterId: string, limit: number): Promise<string[]> {
    const { rows } = await query<{ id: string }>(
      this.pool,
      SELECT_REPLAYABLE,
      [f.queue, states, f.type, f.errorContains, f.finishedAfter, f.finishedBefore, afterId, limit],
      "jobwire_select_replayable",
    );
    return rows.map((r) => r.id);
  }

  async list(f: ListFilter): Promise<Job[]> {
    const { rows } = await query<JobRow>(
      this.pool,
      LIST_JOBS,
      [f.queue, f.type, f.states, f.beforeId, f.limit],
      "jobwire_list_jobs",
    );
    return rows.map(toJob);
  }

  async stats(queues: string[]): Promise<QueueStats[]> {
    const [counts, oldest] = await Promise.all([
      query<{ queue: string; state: JobState; n: string }>(this.pool, QUEUE_COUNTS, [queues], "jobwire_queue_counts"),
      query<{ queue: string; age_ms: string }>(this.pool, OLDEST_AVAILABLE, [queues], "jobwire_oldest_available"),
    ]);
    const byQueue = new Map<string, QueueStats>();
    const entry = (queue: string) => {
      let s = byQueue.get(queue);
      if (!s) {
        s = { queue, counts: Object.fromEntries(JOB_STATES.map((st) => [st, 0])) as Record<JobState, number>, oldestAvailableAgeMs: 0 };
        byQueue.set(queue, s);
      }
      return s;
    };
    for (const r of counts.rows) entry(r.queue).counts[r.state] = Number(r.n);
    for (const r of oldest.rows) entry(r.queue).oldestAvailableAgeMs = Math.max(0, Math.round(Number(r.age_ms)));
    return [...byQueue.values()].sort((a, b) => a.queue.localeCompare(b.queue));
  }

  async metricsSnapshot(): Promise<{ counts: { queue: string; state: string; n: number }[]; oldest: { queue: string; seconds: number }[] }> {
    const [counts, oldest] = await Promise.all([
      query<{ queue: string; state: string; n: number }>(this.pool, METRIC_COUNTS, [], "jobwire_metric_counts"),
      query<{ queue: string; age_ms: string }>(this.pool, OLDEST_AVAILABLE, [[]], "jobwire_oldest_available"),
    ]);
    return {
      counts: counts.rows,
      oldest: oldest.rows.map((r) => ({ queue: r.queue, seconds: Math.max(0, Number(r.age_ms) / 1000) })),
    };
  }

  async setQueueConfig(c: QueueConfig): Promise<void> {
    await query(this.pool, UPSERT_QUEUE, [c.queue, c.maxAttempts, c.leaseMs, policyJson(c.retry), c.completedRetentionMs], "jobwire_upsert_queue");
  }

}

interface FailedRow {
  id: string;
  queue: string;
  state: JobState;
  run_at: Date;
  headers: Record<string, string>;
  attempt: number;
}

function toFailed(r: FailedRow): FailedJob {
  return { id: r.id, queue: r.queue, state: r.state, runAt: r.run_at, headers: r.headers, attempt: r.attempt };
}

function cmpId(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
