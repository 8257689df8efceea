import { invalid, BrokerError } from "../errors.js";
import type { Config } from "../config.js";
import { MAX_BACKOFF_MS, MAX_DURATION_MS, MAX_LEASE_MS, MAX_RETENTION_MS, MIN_LEASE_MS } from "../config.js";
import type { NewJob, RateLimit, RetryPolicy } from "../model.js";

/**
 * Input checks for every RPC. Each failure names the request field at fault,
 * in the proto's own spelling (jobs[2].queue), so a client can fix its call
 * without reading broker logs.
 */

export const QUEUE_NAME = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const JOB_ID = /^\d{1,19}$/;
/** Job ids are Postgres bigints; a longer or larger one would fail its whole statement in SQL. */
const MAX_ID = 9223372036854775807n;
/** A protobuf Timestamp's range, which Postgres and Date both hold: 0001-01-01T00:00:00Z ... */
const EARLIEST_MS = -62_135_596_800_000;
/** ... to 9999-12-31T23:59:59.999Z. (A run_at before 4713 BC failed its whole INSERT in SQL.) */
const LATEST_MS = 253_402_300_799_999;
const MAX_TYPE_LEN = 255;
const MAX_CONTENT_TYPE_LEN = 255;
const MAX_KEY_LEN = 255;
const MAX_HEADERS = 64;
const MAX_HEADER_BYTES = 16 * 1024;
const MAX_WORKER_ID_LEN = 255;
/** Nack messages longer than this are cut, not refused: the failure must be recorded. */
export const MAX_ERROR_MESSAGE_BYTES = 64 * 1024;
const MAX_ATTEMPTS_LIMIT = 1_000_000;
const MAX_LIMIT = 1_000_000;
const MAX_RATE_PERIOD_MS = 24 * 3600_000;

/** In a /u pattern a surrogate pair is one code point, so \p{Cs} matches only a lone half. */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Postgres text cannot hold NUL, and jsonb refuses a lone UTF-16 surrogate
 * (which JSON input can carry as "\ud800"); refusing both here keeps them a
 * client error rather than a failed statement.
 */
export function checkText(field: string, s: string): void {
  if (s.includes("\u0000")) throw invalid(field, "must not contain NUL characters");
  if (LONE_SURROGATE.test(s)) throw invalid(field, "must be valid Unicode (it holds a lone surrogate)");
}

/** True for decimal digits naming a bigint (1 to 2^63-1). */
export function isBigintId(s: string): boolean {
  return JOB_ID.test(s) && (s.length < 19 || BigInt(s) <= MAX_ID);
}

/** A time within years 1 to 9999, or INVALID_ARGUMENT naming the field. */
export function checkTime(field: string, d: Date): Date {
  const t = d.getTime();
  if (Number.isNaN(t) || t < EARLIEST_MS || t > LATEST_MS) {
    throw invalid(field, "must be a time between year 1 and year 9999");
  }
  return d;
}

/** A duration from 0 to max, in whole milliseconds; null passes. */
export function checkDurationMs(field: string, ms: number | null, max: number, what = `${max / 86_400_000} days`): number | null {
  if (ms === null) return null;
  if (!(ms >= 0)) throw invalid(field, "must not be negative");
  if (ms > max) throw invalid(field, `must be at most ${what}, got ${Math.round(ms)}ms`);
  return Math.round(ms);
}

export function checkQueue(field: string, queue: string): void {
  if (queue === "") throw invalid(field, "is required");
  if (!QUEUE_NAME.test(queue)) {
    throw invalid(field, `"${queue.slice(0, 140)}" is not a valid queue name (1-128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit)`);
  }
}

export function checkJobId(field: string, id: string): string {
  if (id === "") throw invalid(field, "is required");
  if (!isBigintId(id)) throw invalid(field, `"${id.slice(0, 40)}" is not a job id`);
  return id;
}

export function checkLeaseMs(field: string, ms: number | null): number | null {
  if (ms === null) return null;
  if (!(ms >= MIN_LEASE_MS && ms <= MAX_LEASE_MS)) {
    throw invalid(field, `must be between ${MIN_LEASE_MS}ms and ${MAX_LEASE_MS / 3600_000}h, got ${ms}ms`);
  }
  return Math.round(ms);
}

/** Whole milliseconds, from zero (delete at ack) to ten years. */
export function checkRetentionMs(field: string, ms: number | null): number | null {
  if (ms === null) return null;
  if (!(ms >= 0 && ms <= MAX_RETENTION_MS)) throw invalid(field, `must be between 0 and 3650 days, got ${ms}ms`);
  return Math.round(ms);
}

/**
 * Backoffs from 0 to 365 days, multiplier 1 to 100, jitter 0 to 1: every
 * combination, at any attempt, gives a finite delay (sql/functions/retry_delay.sql
 * saturates at max_backoff).
 */
export function checkRetry(field: string, p: RetryPolicy | null): RetryPolicy | null {
  if (!p) return null;
  if (p.initialMs !== undefined) checkDurationMs(`${field}.initial_backoff`, p.initialMs, MAX_BACKOFF_MS);
  if (p.maxMs !== undefined) checkDurationMs(`${field}.max_backoff`, p.maxMs, MAX_BACKOFF_MS);
  if (p.initialMs !== undefined && p.maxMs !== undefined && p.maxMs < p.initialMs) {
    throw invalid(`${field}.max_backoff`, "must not be less than initial_backoff");
  }
  if (p.multiplier !== undefined && !(p.multiplier >= 1 && p.multiplier <= 100)) {
    throw invalid(`${field}.multiplier`, "must be between 1 and 100");
  }
  if (p.jitter !== undefined && !(p.jitter >= 0 && p.jitter <= 1)) throw invalid(`${field}.jitter`, "must be between 0 and 1");
  return p;
}

/** A concurrency limit: 1 to 1,000,000 jobs; null = unlimited. */
export function checkLimit(field: string, n: number | null): number | null {
  if (n === null) return null;
  if (!Number.isInteger(n) || n < 1 || n > MAX_LIMIT) throw invalid(field, `must be from 1 to ${MAX_LIMIT}, got ${n}`);
  return n;
}

/** A rate limit: 1 to 1,000,000 starts per 1 ms to 24 h; null = unlimited. */
export function checkRateLimit(field: string, r: RateLimit | null): RateLimit | null {
  if (r === null) return null;
  checkLimit(`${field}.count`, r.count);
  if (!(r.periodMs >= 1 && r.periodMs <= MAX_RATE_PERIOD_MS)) throw invalid(`${field}.period`, `must be from 1ms to 24h, got ${r.periodMs}ms`);
  return { count: r.count, periodMs: Math.round(r.periodMs) };
}

/** A concurrency or ordering key: 1 to 255 characters; "" means none. */
function checkKey(field: string, k: string | null): string | null {
  if (k === null || k === "") return null;
  if (k.length > MAX_KEY_LEN) throw invalid(field, `is longer than ${MAX_KEY_LEN} characters`);
  checkText(field, k);
  return k;
}

export function checkMaxAttempts(field: string, n: number | null): number | null {
  if (n === null) return null;
  if (!Number.isInteger(n) || n < 1 || n > MAX_ATTEMPTS_LIMIT) throw invalid(field, `must be from 1 to ${MAX_ATTEMPTS_LIMIT}, got ${n}`);
  return n;
}

export function checkJobSpecs(specs: NewJob[], cfg: Config): NewJob[] {
  if (specs.length === 0) throw invalid("jobs", "must contain at least one job");
  if (specs.length > cfg.maxBatch) throw invalid("jobs", `holds ${specs.length} jobs; the limit is ${cfg.maxBatch} per call`);
  return specs.map((s, i) => checkJobSpec(s, `jobs[${i}]`, cfg));
}

export function checkJobSpec(s: NewJob, at: string, cfg: Config): NewJob {
  checkQueue(`${at}.queue`, s.queue);
  if (s.type === "") throw invalid(`${at}.type`, "is required");
  if (s.type.length > MAX_TYPE_LEN) throw invalid(`${at}.type`, `is longer than ${MAX_TYPE_LEN} characters`);
  checkText(`${at}.type`, s.type);
  checkText(`${at}.content_type`, s.contentType);
  const key = s.idempotencyKey ?? "";
  checkText(`${at}.idempotency_key`, key);
  if (s.payload.byteLength > cfg.maxPayloadBytes) {
    throw new BrokerError(
      "resource_exhausted",
      `${at}.payload: ${s.payload.byteLength} bytes is over the ${cfg.maxPayloadBytes}-byte payload limit`,
      `${at}.payload`,
    );
  }
  if (s.contentType.length > MAX_CONTENT_TYPE_LEN) throw invalid(`${at}.content_type`, `is longer than ${MAX_CONTENT_TYPE_LEN} characters`);
  const delayMs = checkDurationMs(`${at}.delay`, s.delayMs, MAX_DURATION_MS);
  if (s.runAt !== null) checkTime(`${at}.run_at`, s.runAt);
  if (!Number.isInteger(s.priority)) throw invalid(`${at}.priority`, "must be an integer");
  if (key.length > MAX_KEY_LEN) throw invalid(`${at}.idempotency_key`, `is longer than ${MAX_KEY_LEN} characters`);
  if (s.idempotencyTtlMs !== null && !(s.idempotencyTtlMs > 0)) throw invalid(`${at}.idempotency_ttl`, "must be positive");
  checkDurationMs(`${at}.idempotency_ttl`, s.idempotencyTtlMs, MAX_DURATION_MS);
  if (s.idempotencyTtlMs !== null && key === "") throw invalid(`${at}.idempotency_ttl`, "needs an idempotency_key");
  const headerKeys = Object.keys(s.headers);
  if (headerKeys.length > MAX_HEADERS) throw invalid(`${at}.headers`, `has ${headerKeys.length} entries; the limit is ${MAX_HEADERS}`);
  let headerBytes = 0;
  for (const k of headerKeys) {
    if (k === "") throw invalid(`${at}.headers`, "has an empty key");
    checkText(`${at}.headers["${k.slice(0, 40)}"]`, k + s.headers[k]);
    headerBytes += Buffer.byteLength(k) + Buffer.byteLength(s.headers[k]!);
  }
  if (headerBytes > MAX_HEADER_BYTES) {
    throw new BrokerError("resource_exhausted", `${at}.headers: ${headerBytes} bytes is over the ${MAX_HEADER_BYTES}-byte limit`, `${at}.headers`);
  }
  return {
    queue: s.queue,
    type: s.type,
    payload: s.payload,
    contentType: s.contentType || "application/json",
    runAt: s.runAt,
    delayMs,
    priority: s.priority,
    maxAttempts: checkMaxAttempts(`${at}.max_attempts`, s.maxAttempts),
    leaseMs: checkLeaseMs(`${at}.lease_duration`, s.leaseMs),
    retry: checkRetry(`${at}.retry`, s.retry),
    idempotencyKey: key === "" ? null : key,
    idempotencyTtlMs: key === "" ? null : Math.round(s.idempotencyTtlMs ?? cfg.idempotencyTtlMs),
    headers: s.headers,
    concurrencyKey: checkKey(`${at}.concurrency_key`, s.concurrencyKey),
    orderingKey: checkKey(`${at}.ordering_key`, s.orderingKey),
  };
}

export interface LeaseOpenInput {
  queues: string[];
  workerId: string;
  maxInFlight: number;
  leaseMs: number | null;
  /** The worker's address as the transport sees it ("" when unknown). */
  peer?: string;
}

export function checkLeaseOpen(o: LeaseOpenInput, cfg: Config): LeaseOpenInput {
  if (o.queues.length === 0) throw invalid("open.queues", "must name at least one queue");
  if (o.queues.length > 100) throw invalid("open.queues", "names more than 100 queues");
  for (const [i, q] of o.queues.entries()) checkQueue(`open.queues[${i}]`, q);
  if (o.workerId.length > MAX_WORKER_ID_LEN) throw invalid("open.worker_id", `is longer than ${MAX_WORKER_ID_LEN} characters`);
  checkText("open.worker_id", o.workerId);
  if (!Number.isInteger(o.maxInFlight) || o.maxInFlight < 1 || o.maxInFlight > cfg.maxInFlight) {
    throw invalid("open.max_in_flight", `must be from 1 to ${cfg.maxInFlight}, got ${o.maxInFlight}`);
  }
  return { ...o, queues: [...new Set(o.queues)], leaseMs: checkLeaseMs("open.lease_duration", o.leaseMs) };
}

/** Error messages are recorded whatever they hold: NULs become U+FFFD, and long ones are cut. */
export function truncateMessage(raw: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is what Postgres text refuses, so it is what this replaces.
  const message = raw.replace(/\u0000|\p{Cs}/gu, "\uFFFD");
  if (Buffer.byteLength(message) <= MAX_ERROR_MESSAGE_BYTES) return message;
  const cut = Buffer.from(message).subarray(0, MAX_ERROR_MESSAGE_BYTES - 32).toString("utf8").replace(/\uFFFD$/, "");
  return `${cut} …[truncated]`;
}
