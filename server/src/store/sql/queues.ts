import type { QueueConfig } from "../../model.js";
import { query, type Queryable } from "../db.js";
import { policyJson } from "./rows.js";

/** Per-queue settings (jobwire.queues), set with AdminService.SetQueueConfig. */

const UPSERT_QUEUE = `
INSERT INTO jobwire.queues (name, max_attempts, lease_ms, retry, completed_retention_ms, updated_at) VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (name) DO UPDATE SET max_attempts = EXCLUDED.max_attempts, lease_ms = EXCLUDED.lease_ms,
  retry = EXCLUDED.retry, completed_retention_ms = EXCLUDED.completed_retention_ms, updated_at = now()`;

/** jobwire.settings, read by sql/functions/enqueue.sql. */
const WRITE_SETTINGS = `
INSERT INTO jobwire.settings (name, value)
SELECT * FROM unnest($1::text[], $2::jsonb[])
ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
WHERE jobwire.settings.value IS DISTINCT FROM EXCLUDED.value`;

export async function writeSettings(db: Queryable, s: { defaultMaxAttempts: number; maxPayloadBytes: number }): Promise<void> {
  await query(db, WRITE_SETTINGS, [["default_max_attempts", "max_payload_bytes"], [String(s.defaultMaxAttempts), String(s.maxPayloadBytes)]], "jobwire_write_settings");
}

export async function setQueueConfig(db: Queryable, c: QueueConfig): Promise<void> {
  await query(db, UPSERT_QUEUE, [c.queue, c.maxAttempts, c.leaseMs, policyJson(c.retry), c.completedRetentionMs], "jobwire_upsert_queue");
}
