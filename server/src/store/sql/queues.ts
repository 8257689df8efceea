import type { QueueConfig, QueueConfigChange, QueueSetting } from "../../model.js";
import { query, type Queryable } from "../db.js";
import { policyFromJson, policyJson } from "./rows.js";

/**
 * Per-queue settings (jobwire.queues): SetQueueConfig, GetQueueConfig,
 * PauseQueue, ResumeQueue. A queue nobody configured has no row, and its
 * config is all unset.
 */

/** The columns each setting lives in. */
const COLUMNS: Record<QueueSetting, string[]> = {
  retry: ["retry"],
  maxAttempts: ["max_attempts"],
  leaseMs: ["lease_ms"],
  completedRetentionMs: ["completed_retention_ms"],
  maxRunning: ["max_running"],
  maxRunningPerKey: ["max_running_per_key"],
  rateLimit: ["rate_count", "rate_period_ms"],
  rateLimitPerKey: ["key_rate_count", "key_rate_period_ms"],
};

const CONFIG_COLUMNS = `name, retry, max_attempts, lease_ms, completed_retention_ms, max_running, max_running_per_key,
  rate_count, rate_period_ms, key_rate_count, key_rate_period_ms, paused, updated_at`;

/**
 * Sets the named settings and leaves the others as they are, in one
 * statement: a column changes only when its setting is in $2.
 */
const SET_CONFIG = `
INSERT INTO jobwire.queues AS q (name, retry, max_attempts, lease_ms, completed_retention_ms, max_running, max_running_per_key,
                                 rate_count, rate_period_ms, key_rate_count, key_rate_period_ms, updated_at)
VALUES ($1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())
ON CONFLICT (name) DO UPDATE SET
  ${Object.values(COLUMNS)
    .flat()
    .map((c) => `${c} = CASE WHEN '${c}' = ANY ($2::text[]) THEN EXCLUDED.${c} ELSE q.${c} END`)
    .join(",\n  ")},
  updated_at = now()
RETURNING ${CONFIG_COLUMNS}`;

const GET_CONFIG = `SELECT ${CONFIG_COLUMNS} FROM jobwire.queues WHERE name = $1`;

/** Pause or resume; a resumed queue's idle streams are woken at commit. */
const SET_PAUSED = `
WITH up AS (
  INSERT INTO jobwire.queues AS q (name, paused, updated_at) VALUES ($1, $2, now())
  ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now()
  RETURNING ${CONFIG_COLUMNS}
)
SELECT up.*, CASE WHEN NOT up.paused THEN pg_notify('jobwire', 'a:' || up.name) END AS notified FROM up`;

interface ConfigRow {
  name: string;
  retry: Record<string, number> | null;
  max_attempts: number | null;
  lease_ms: number | null;
  completed_retention_ms: string | null;
  max_running: number | null;
  max_running_per_key: number | null;
  rate_count: number | null;
  rate_period_ms: string | null;
  key_rate_count: number | null;
  key_rate_period_ms: string | null;
  paused: boolean;
  updated_at: Date | null;
}

function toConfig(r: ConfigRow): QueueConfig {
  return {
    queue: r.name,
    retry: policyFromJson(r.retry),
    maxAttempts: r.max_attempts,
    leaseMs: r.lease_ms,
    completedRetentionMs: r.completed_retention_ms === null ? null : Number(r.completed_retention_ms),
    maxRunning: r.max_running,
    maxRunningPerKey: r.max_running_per_key,
    rateLimit: r.rate_count === null ? null : { count: r.rate_count, periodMs: Number(r.rate_period_ms) },
    rateLimitPerKey: r.key_rate_count === null ? null : { count: r.key_rate_count, periodMs: Number(r.key_rate_period_ms) },
    paused: r.paused,
    updatedAt: r.updated_at,
  };
}

/** The config of a queue nobody configured. */
export function defaultConfig(queue: string): QueueConfig {
  return {
    queue,
    retry: null,
    maxAttempts: null,
    leaseMs: null,
    completedRetentionMs: null,
    maxRunning: null,
    maxRunningPerKey: null,
    rateLimit: null,
    rateLimitPerKey: null,
    paused: false,
    updatedAt: null,
  };
}

export async function setQueueConfig(db: Queryable, c: QueueConfigChange): Promise<QueueConfig> {
  const v = c.values;
  const { rows } = await query<ConfigRow>(
    db,
    SET_CONFIG,
    [
      c.queue,
      c.fields.flatMap((f) => COLUMNS[f]),
      policyJson(v.retry),
      v.maxAttempts,
      v.leaseMs,
      v.completedRetentionMs,
      v.maxRunning,
      v.maxRunningPerKey,
      v.rateLimit?.count ?? null,
      v.rateLimit?.periodMs ?? null,
      v.rateLimitPerKey?.count ?? null,
      v.rateLimitPerKey?.periodMs ?? null,
    ],
    "jobwire_set_queue_config",
  );
  return toConfig(rows[0]!);
}

export async function getQueueConfig(db: Queryable, queue: string): Promise<QueueConfig> {
  const { rows } = await query<ConfigRow>(db, GET_CONFIG, [queue], "jobwire_get_queue_config");
  return rows[0] ? toConfig(rows[0]) : defaultConfig(queue);
}

export async function setPaused(db: Queryable, queue: string, paused: boolean): Promise<QueueConfig> {
  const { rows } = await query<ConfigRow>(db, SET_PAUSED, [queue, paused], "jobwire_set_paused");
  return toConfig(rows[0]!);
}

/** jobwire.settings, read by sql/functions/enqueue.sql. */
const WRITE_SETTINGS = `
INSERT INTO jobwire.settings (name, value)
SELECT * FROM unnest($1::text[], $2::jsonb[])
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
WHERE jobwire.settings.value IS DISTINCT FROM EXCLUDED.value`;

export async function writeSettings(db: Queryable, s: { defaultMaxAttempts: number; maxPayloadBytes: number }): Promise<void> {
  await query(db, WRITE_SETTINGS, [["default_max_attempts", "max_payload_bytes"], [String(s.defaultMaxAttempts), String(s.maxPayloadBytes)]], "jobwire_write_settings");
}
