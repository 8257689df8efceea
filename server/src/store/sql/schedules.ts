import type pg from "pg";
import type { Fired, NewJob, RetryPolicy, Schedule } from "../../model.js";
import { query, withTx, type Queryable } from "../db.js";
import { insertJobs } from "./enqueue.js";

/** Recurring schedules (jobwire.schedules) and their fires. */

interface TemplateJson {
  queue: string;
  type: string;
  payload: string;
  content_type: string;
  priority: number;
  max_attempts: number | null;
  lease_ms: number | null;
  retry: RetryPolicy | null;
  headers: Record<string, string>;
  concurrency_key?: string | null;
  ordering_key?: string | null;
}

function templateToJson(t: NewJob): TemplateJson {
  return {
    queue: t.queue,
    type: t.type,
    payload: Buffer.from(t.payload).toString("base64"),
    content_type: t.contentType,
    priority: t.priority,
    max_attempts: t.maxAttempts,
    lease_ms: t.leaseMs,
    retry: t.retry,
    headers: t.headers,
    concurrency_key: t.concurrencyKey,
    ordering_key: t.orderingKey,
  };
}

function templateFromJson(j: TemplateJson): NewJob {
  return {
    queue: j.queue,
    type: j.type,
    payload: Buffer.from(j.payload, "base64"),
    contentType: j.content_type,
    runAt: null,
    delayMs: null,
    priority: j.priority,
    maxAttempts: j.max_attempts,
    leaseMs: j.lease_ms,
    retry: j.retry,
    idempotencyKey: null,
    idempotencyTtlMs: null,
    headers: j.headers,
    concurrencyKey: j.concurrency_key ?? null,
    orderingKey: j.ordering_key ?? null,
  };
}

interface ScheduleRow {
  name: string;
  cron: string;
  template: TemplateJson;
  paused: boolean;
  next_run_at: Date | null;
  last_run_at: Date | null;
  last_job_id: string | null;
}

function toSchedule(r: ScheduleRow): Schedule {
  return {
    name: r.name,
    cron: r.cron,
    template: templateFromJson(r.template),
    paused: r.paused,
    nextRunAt: r.next_run_at,
    lastRunAt: r.last_run_at,
    lastJobId: r.last_job_id,
  };
}

const COLUMNS = "name, cron, template, paused, next_run_at, last_run_at, last_job_id";

const UPSERT = `
INSERT INTO jobwire.schedules (name, cron, template, paused, next_run_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, template = EXCLUDED.template, paused = EXCLUDED.paused,
  next_run_at = EXCLUDED.next_run_at, updated_at = now()
RETURNING ${COLUMNS}`;

const DELETE = "DELETE FROM jobwire.schedules WHERE name = $1";

const LIST = `SELECT ${COLUMNS} FROM jobwire.schedules ORDER BY name`;

/** Due schedules, locked so that replicas split them and each fires once. */
const DUE = `
SELECT ${COLUMNS}, now() AS now FROM jobwire.schedules
WHERE NOT paused AND next_run_at <= now()
ORDER BY next_run_at
LIMIT $1
FOR UPDATE SKIP LOCKED`;

const FIRED = `
UPDATE jobwire.schedules SET next_run_at = $2, last_run_at = $3, last_job_id = $4, updated_at = now()
WHERE name = $1`;

const MS_UNTIL_NEXT = `
SELECT extract(epoch FROM min(next_run_at) - now()) * 1000 AS ms FROM jobwire.schedules WHERE NOT paused`;

/** How long a fire's idempotency key holds: far longer than any gap between fires matters. */
const FIRE_KEY_TTL_MS = 7 * 24 * 3600_000;

export async function upsertSchedule(
  db: Queryable,
  s: { name: string; cron: string; template: NewJob; paused: boolean; nextRunAt: Date | null },
): Promise<Schedule> {
  const { rows } = await query<ScheduleRow>(
    db,
    UPSERT,
    [s.name, s.cron, JSON.stringify(templateToJson(s.template)), s.paused, s.nextRunAt],
    "jobwire_upsert_schedule",
  );
  return toSchedule(rows[0]!);
}

export async function deleteSchedule(db: Queryable, name: string): Promise<boolean> {
  const { rowCount } = await query(db, DELETE, [name], "jobwire_delete_schedule");
  return (rowCount ?? 0) > 0;
}

export async function listSchedules(db: Queryable): Promise<Schedule[]> {
  const { rows } = await query<ScheduleRow>(db, LIST, [], "jobwire_list_schedules");
  return rows.map(toSchedule);
}

/** The database's clock, which every fire time is measured against. */
export async function dbNow(db: Queryable): Promise<Date> {
  const { rows } = await query<{ now: Date }>(db, "SELECT now() AS now", [], "jobwire_now");
  return rows[0]!.now;
}

export async function msUntilNextFire(db: Queryable): Promise<number | null> {
  const { rows } = await query<{ ms: string | null }>(db, MS_UNTIL_NEXT, [], "jobwire_schedules_next");
  const ms = rows[0]?.ms;
  return ms === null || ms === undefined ? null : Number(ms);
}

/**
 * Fires every due schedule in one transaction: enqueue its job (keyed by
 * the fire time, so a second replica's attempt is a no-op) and record the
 * next fire time, which `next` computes from the fire time and now.
 */
export async function fireDue(
  pool: pg.Pool,
  defaultMaxAttempts: number,
  limit: number,
  next: (cron: string, firedAt: Date, now: Date) => Date | null,
): Promise<Fired[]> {
  return withTx(pool, async (c) => {
    const { rows } = await c.query<ScheduleRow & { now: Date }>({ name: "jobwire_due_schedules", text: DUE, values: [limit] });
    const fired: Fired[] = [];
    for (const r of rows) {
      const at = r.next_run_at!;
      const job: NewJob = {
        ...templateFromJson(r.template),
        idempotencyKey: `cron:${r.name}:${at.toISOString()}`,
        idempotencyTtlMs: FIRE_KEY_TTL_MS,
      };
      const [result] = await insertJobs(c, [job], defaultMaxAttempts);
      await c.query({ name: "jobwire_fired_schedule", text: FIRED, values: [r.name, next(r.cron, at, r.now), at, result!.jobId] });
      fired.push({ name: r.name, at, result: result! });
    }
    return fired;
  });
}
