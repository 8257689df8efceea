import type { QueueConfig } from "../../model.js";
import { query, type Queryable } from "../db.js";
import { policyJson } from "./rows.js";

/** Per-queue settings (jobwire.queues), set with AdminService.SetQueueConfig. */

const UPSERT_QUEUE = `
INSERT INTO jobwire.queues (name, max_attempts, lease_ms, retry, completed_retention_ms, updated_at) VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (name) DO UPDATE SET max_attempts = EXCLUDED.max_attempts, lease_ms = EXCLUDED.lease_ms,
  retry = EXCLUDED.retry, completed_retention_ms = EXCLUDED.completed_retention_ms, updated_at = now()`;

export async function setQueueConfig(db: Queryable, c: QueueConfig): Promise<void> {
  await query(db, UPSERT_QUEUE, [c.queue, c.maxAttempts, c.leaseMs, policyJson(c.retry), c.completedRetentionMs], "jobwire_upsert_queue");
}
