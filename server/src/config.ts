/**
 * The broker's one typed configuration object. Every limit is set here
 * explicitly, with a named default, and validated once at start-up; no
 * library's default is inherited silently.
 *
 * Sources, later wins: defaults, environment variables, command-line flags
 * (`--port 50051` or `--port=50051`; the flag name is the env name without
 * the JOBWIRE_ prefix, lower-cased, with dashes).
 */

import { parseArgs } from "node:util";

export const DEFAULT_PORT = 50051;
export const DEFAULT_HOST = "127.0.0.1";
export const DEFAULT_DATA_DIR = ".jobwire";
/** Largest payload accepted per job. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;
/** Largest request message accepted on any RPC. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** Most jobs in one Enqueue call. */
export const DEFAULT_MAX_BATCH = 1000;
/** Most jobs a Lease stream may hold at once (its max_in_flight). */
export const DEFAULT_MAX_IN_FLIGHT = 1000;
/** Lease length when neither the job, the worker nor the queue sets one. */
export const DEFAULT_LEASE_MS = 30_000;
export const MIN_LEASE_MS = 100;
export const MAX_LEASE_MS = 24 * 3600_000;
export const DEFAULT_MAX_ATTEMPTS = 25;
export const DEFAULT_IDEMPOTENCY_TTL_MS = 24 * 3600_000;
/** How often idle dispatchers look for work if no NOTIFY arrives. */
export const DEFAULT_POLL_INTERVAL_MS = 1000;
/** How often the reaper looks for expired leases. */
export const DEFAULT_REAPER_INTERVAL_MS = 1000;
/** Jobs the reaper moves per statement. */
export const DEFAULT_REAPER_BATCH = 1000;
/** Longest the scheduler sleeps between checks for due jobs. */
export const DEFAULT_SCHEDULER_INTERVAL_MS = 1000;
/** Empty LeaseResponse sent on idle streams so proxies keep them open. */
export const DEFAULT_KEEPALIVE_MS = 15_000;
/** How long SIGTERM waits for calls in flight before closing anyway. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000;
/** Most jobs claimed by one statement for one stream. */
export const DEFAULT_CLAIM_BATCH = 500;
/** How long completed jobs stay as history when their queue sets no retention; 0 deletes them at ack. */
export const DEFAULT_COMPLETED_RETENTION_MS = 24 * 3600_000;
export const MAX_RETENTION_MS = 3650 * 24 * 3600_000;
/**
 * The longest delay, idempotency TTL and Nack retry_after: 3650 days. Past
 * it a request is refused with INVALID_ARGUMENT naming the field. (Before
 * this bound, anything over 2^31 ms, 24.86 days, failed in SQL with INTERNAL.)
 */
export const MAX_DURATION_MS = 3650 * 24 * 3600_000;
/** The longest retry backoff (initial or max): 365 days. */
export const MAX_BACKOFF_MS = 365 * 24 * 3600_000;
/**
 * Room a job needs in a message beside its payload: the error history (at
 * most 128 KiB, or two messages of 64 KiB: sql/functions/push_error.sql),
 * headers (16 KiB), and everything else (keys, type, times: under 2 KiB).
 */
export const JOB_OVERHEAD_BYTES = 160 * 1024;
/** How often the pruner looks for completed jobs past their retention. */
export const DEFAULT_PRUNER_INTERVAL_MS = 10_000;
/** Jobs the pruner deletes per statement; a full batch runs the next one at once. */
export const DEFAULT_PRUNER_BATCH = 5000;
/** Postgres connections held by the broker (the LISTEN connection is extra). */
export const DEFAULT_POOL_SIZE = 10;
/** 30 s for a request's headers and body: generous for a 4 MiB message on a slow link. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/**
 * HTTP/2 streams one connection may have open at once. A worker needs one
 * Lease stream and a few unary calls; a producer a few dozen calls in
 * flight (the bench's: 32). 256 leaves room, and caps what one
 * connection can hold open.
 */
export const DEFAULT_MAX_STREAMS_PER_CONNECTION = 256;

export interface Config {
  host: string;
  port: number;
  /** Postgres URL; when unset the broker runs an embedded Postgres in dataDir. */
  databaseUrl: string | undefined;
  dataDir: string;
  /** Port for the embedded Postgres; 0 picks a free one. */
  embeddedPgPort: number;
  poolSize: number;
  maxPayloadBytes: number;
  maxMessageBytes: number;
  maxBatch: number;
  maxInFlight: number;
  defaultLeaseMs: number;
  defaultMaxAttempts: number;
  idempotencyTtlMs: number;
  pollIntervalMs: number;
  reaperIntervalMs: number;
  reaperBatch: number;
  schedulerIntervalMs: number;
  keepaliveMs: number;
  shutdownTimeoutMs: number;
  claimBatch: number;
  completedRetentionMs: number;
  prunerIntervalMs: number;
  prunerBatch: number;
  /**
   * When set, every RPC must carry "authorization: Bearer <token>" (one of
   * a comma-separated list, so tokens can be rotated). Health and metrics
   * stay open.
   */
  authTokens: string[];
  /** Scoped tokens and certificate subjects (transport/tokens-file.ts); reloaded on SIGHUP and on change. */
  authFile: string | undefined;
  /** /metrics needs the read scope. */
  metricsAuth: boolean;
  /** PEM files: serve TLS; with tlsClientCa, require client certificates. */
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  tlsClientCa: string | undefined;
  /** A request's headers and body must arrive within this long (streams excepted). */
  requestTimeoutMs: number;
  /** Concurrent HTTP/2 streams per connection. */
  maxStreamsPerConnection: number;
  /** The dashboard's link to a trace, with {trace_id}: e.g. http://localhost:16686/trace/{trace_id}. */
  traceUrl: string;
  logLevel: "debug" | "info" | "warn" | "error";
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

type Parser = (raw: string, name: string) => unknown;

const int =
  (min: number, max: number): Parser =>
  (raw, name) => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
    }
    return n;
  };
const str: Parser = (raw) => raw;
const bool: Parser = (raw, name) => {
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new ConfigError(`${name} must be 1 or 0 (true or false), got "${raw}"`);
};
const oneOf =
  (...values: string[]): Parser =>
  (raw, name) => {
    if (!values.includes(raw)) throw new ConfigError(`${name} must be one of ${values.join(", ")}, got "${raw}"`);
    return raw;
  };

const tokens: Parser = (raw, name) => {
  const list = raw.split(",").map((t) => t.trim()).filter(Boolean);
  if (list.some((t) => t.length < 16)) throw new ConfigError(`${name}: each token must be at least 16 characters`);
  return list;
};

const databaseUrl: Parser = (raw, name) => {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(`${name} must be a Postgres URL such as postgres://user:password@host:5432/database, got "${raw.slice(0, 80)}"`);
  }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") {
    throw new ConfigError(`${name} must be a Postgres URL (postgres:// or postgresql://), got a ${u.protocol.replace(/:$/, "")}:// URL`);
  }
  if (!u.hostname) throw new ConfigError(`${name} names no host: "${raw.slice(0, 80)}"`);
  return raw;
};

/** Each setting: its key, env var, parser, default, and the line --help shows. */
const SETTINGS: { key: keyof Config; env: string; parse: Parser; def: Config[keyof Config]; help: string }[] = [
  { key: "host", env: "JOBWIRE_HOST", parse: str, def: DEFAULT_HOST, help: "interface to listen on (0.0.0.0 in containers)" },
  { key: "port", env: "JOBWIRE_PORT", parse: int(0, 65535), def: DEFAULT_PORT, help: "port for gRPC, gRPC-Web, Connect, the dashboard and /metrics (0 picks a free one)" },
  { key: "databaseUrl", env: "DATABASE_URL", parse: databaseUrl, def: undefined, help: "Postgres to use (postgres://...); unset runs an embedded one" },
  { key: "dataDir", env: "JOBWIRE_DATA_DIR", parse: str, def: DEFAULT_DATA_DIR, help: "where the embedded Postgres keeps its data" },
  { key: "embeddedPgPort", env: "JOBWIRE_EMBEDDED_PG_PORT", parse: int(0, 65535), def: 0, help: "port of the embedded Postgres (0 picks a free one)" },
  { key: "poolSize", env: "JOBWIRE_POOL_SIZE", parse: int(2, 200), def: DEFAULT_POOL_SIZE, help: "Postgres connections (plus one for LISTEN)" },
  { key: "maxPayloadBytes", env: "JOBWIRE_MAX_PAYLOAD_BYTES", parse: int(1, 64 * 1024 * 1024), def: DEFAULT_MAX_PAYLOAD_BYTES, help: "largest job payload" },
  { key: "maxMessageBytes", env: "JOBWIRE_MAX_MESSAGE_BYTES", parse: int(1024, 256 * 1024 * 1024), def: DEFAULT_MAX_MESSAGE_BYTES, help: "largest gRPC message, either way (at least the payload limit + 160 KiB)" },
  { key: "maxBatch", env: "JOBWIRE_MAX_BATCH", parse: int(1, 100_000), def: DEFAULT_MAX_BATCH, help: "most jobs per Enqueue" },
  { key: "maxInFlight", env: "JOBWIRE_MAX_IN_FLIGHT", parse: int(1, 100_000), def: DEFAULT_MAX_IN_FLIGHT, help: "largest max_in_flight a Lease stream may ask for" },
  { key: "defaultLeaseMs", env: "JOBWIRE_DEFAULT_LEASE_MS", parse: int(MIN_LEASE_MS, MAX_LEASE_MS), def: DEFAULT_LEASE_MS, help: "lease length when neither job, worker nor queue sets one" },
  { key: "defaultMaxAttempts", env: "JOBWIRE_DEFAULT_MAX_ATTEMPTS", parse: int(1, 1_000_000), def: DEFAULT_MAX_ATTEMPTS, help: "attempts when neither job nor queue sets them (gRPC, cron and SQL enqueue)" },
  { key: "idempotencyTtlMs", env: "JOBWIRE_IDEMPOTENCY_TTL_MS", parse: int(1000, MAX_DURATION_MS), def: DEFAULT_IDEMPOTENCY_TTL_MS, help: "how long an idempotency key holds by default" },
  { key: "pollIntervalMs", env: "JOBWIRE_POLL_INTERVAL_MS", parse: int(10, 600_000), def: DEFAULT_POLL_INTERVAL_MS, help: "how often one idle stream per queue looks for work if no NOTIFY comes" },
  { key: "reaperIntervalMs", env: "JOBWIRE_REAPER_INTERVAL_MS", parse: int(10, 600_000), def: DEFAULT_REAPER_INTERVAL_MS, help: "how often expired leases are reclaimed" },
  { key: "reaperBatch", env: "JOBWIRE_REAPER_BATCH", parse: int(1, 100_000), def: DEFAULT_REAPER_BATCH, help: "most leases reclaimed, or due jobs promoted, per statement" },
  { key: "schedulerIntervalMs", env: "JOBWIRE_SCHEDULER_INTERVAL_MS", parse: int(10, 600_000), def: DEFAULT_SCHEDULER_INTERVAL_MS, help: "longest wait between checks for due delayed jobs and cron fires" },
  { key: "keepaliveMs", env: "JOBWIRE_KEEPALIVE_MS", parse: int(100, 3600_000), def: DEFAULT_KEEPALIVE_MS, help: "empty message on idle Lease streams, so proxies keep them open" },
  { key: "shutdownTimeoutMs", env: "JOBWIRE_SHUTDOWN_TIMEOUT_MS", parse: int(0, 3600_000), def: DEFAULT_SHUTDOWN_TIMEOUT_MS, help: "how long SIGTERM waits for calls in flight" },
  { key: "claimBatch", env: "JOBWIRE_CLAIM_BATCH", parse: int(1, 10_000), def: DEFAULT_CLAIM_BATCH, help: "most jobs claimed by one statement" },
  { key: "completedRetentionMs", env: "JOBWIRE_COMPLETED_RETENTION_MS", parse: int(0, MAX_RETENTION_MS), def: DEFAULT_COMPLETED_RETENTION_MS, help: "how long completed jobs stay when their queue sets none; 0 deletes them at ack" },
  { key: "prunerIntervalMs", env: "JOBWIRE_PRUNER_INTERVAL_MS", parse: int(10, 3600_000), def: DEFAULT_PRUNER_INTERVAL_MS, help: "how often completed jobs past their retention are deleted" },
  { key: "prunerBatch", env: "JOBWIRE_PRUNER_BATCH", parse: int(1, 100_000), def: DEFAULT_PRUNER_BATCH, help: "most jobs the pruner deletes per statement" },
  { key: "authTokens", env: "JOBWIRE_AUTH_TOKENS", parse: tokens, def: [], help: "comma-separated bearer tokens with every scope" },
  { key: "authFile", env: "JOBWIRE_AUTH_FILE", parse: str, def: undefined, help: "tokens file (YAML or JSON) with scoped tokens and certificate subjects; reloaded on SIGHUP" },
  { key: "metricsAuth", env: "JOBWIRE_METRICS_AUTH", parse: bool, def: false, help: "1: /metrics needs a token with the read scope" },
  { key: "tlsCert", env: "JOBWIRE_TLS_CERT", parse: str, def: undefined, help: "PEM certificate chain: serve TLS (with JOBWIRE_TLS_KEY); reloaded on SIGHUP" },
  { key: "tlsKey", env: "JOBWIRE_TLS_KEY", parse: str, def: undefined, help: "PEM private key for JOBWIRE_TLS_CERT" },
  { key: "tlsClientCa", env: "JOBWIRE_TLS_CLIENT_CA", parse: str, def: undefined, help: "PEM CA bundle: require client certificates that chain to it (mTLS)" },
  { key: "requestTimeoutMs", env: "JOBWIRE_REQUEST_TIMEOUT_MS", parse: int(1000, 3600_000), def: DEFAULT_REQUEST_TIMEOUT_MS, help: "a request's headers and body must arrive within this long (streams excepted)" },
  { key: "maxStreamsPerConnection", env: "JOBWIRE_MAX_STREAMS_PER_CONNECTION", parse: int(1, 100_000), def: DEFAULT_MAX_STREAMS_PER_CONNECTION, help: "concurrent HTTP/2 streams one connection may have open" },
  { key: "traceUrl", env: "JOBWIRE_TRACE_URL", parse: str, def: "", help: "the dashboard's trace link, with {trace_id} (e.g. http://localhost:16686/trace/{trace_id})" },
  { key: "logLevel", env: "JOBWIRE_LOG_LEVEL", parse: oneOf("debug", "info", "warn", "error"), def: "info", help: "debug, info, warn or error (JSON lines on stderr)" },
];

function flagName(env: string): string {
  return env.replace(/^JOBWIRE_/, "").toLowerCase().replace(/_/g, "-");
}

/** The command line, read with node:util's parseArgs: --port 50051 or --port=50051. */
function parseFlags(argv: readonly string[]): Map<string, string> {
  const options = Object.fromEntries(SETTINGS.map((s) => [flagName(s.env), { type: "string" as const }]));
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    const known = Object.keys(options).map((k) => `--${k}`).join(", ");
    throw new ConfigError(`${(err as Error).message.replace(/\. To specify.*$/s, "")}; known flags: ${known}`);
  }
  const out = new Map<string, string>();
  for (const s of SETTINGS) {
    const v = values[flagName(s.env)];
    if (typeof v === "string") out.set(s.env, v);
  }
  return out;
}

/** Builds and validates the config. Throws ConfigError with a message fit for a human. */
export function loadConfig(
  env: Record<string, string | undefined> = process.env,
  argv: readonly string[] = [],
  overrides: Partial<Config> = {},
): Config {
  const flags = parseFlags(argv);
  const cfg: Record<string, unknown> = {};
  for (const s of SETTINGS) {
    const raw = flags.get(s.env) ?? env[s.env];
    cfg[s.key] = raw === undefined || raw === "" ? s.def : s.parse(raw.trim(), flags.has(s.env) ? `--${flagName(s.env)}` : s.env);
  }
  const config = { ...(cfg as unknown as Config), ...overrides };
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) {
    throw new ConfigError("JOBWIRE_TLS_CERT and JOBWIRE_TLS_KEY go together: set both, or neither");
  }
  if (config.tlsClientCa !== undefined && config.tlsCert === undefined) {
    throw new ConfigError("JOBWIRE_TLS_CLIENT_CA (mTLS) needs JOBWIRE_TLS_CERT and JOBWIRE_TLS_KEY");
  }
  // Every job must fit in one message, or it could never be delivered nor read.
  if (config.maxPayloadBytes + JOB_OVERHEAD_BYTES > config.maxMessageBytes) {
    throw new ConfigError(
      `JOBWIRE_MAX_MESSAGE_BYTES (${config.maxMessageBytes}) must leave ${JOB_OVERHEAD_BYTES} bytes beside JOBWIRE_MAX_PAYLOAD_BYTES ` +
        `(${config.maxPayloadBytes}) for a job's error history and headers; raise it to at least ${config.maxPayloadBytes + JOB_OVERHEAD_BYTES}`,
    );
  }
  return config;
}

/** One line per flag for --help: the flag, its variable, what it does, and its default. */
export function describeFlags(): string {
  const show = (d: unknown) => (d === undefined || (Array.isArray(d) && d.length === 0) ? "unset" : String(d));
  return SETTINGS.map((s) => `  --${flagName(s.env).padEnd(24)} ${s.help} [${s.env}, default ${show(s.def)}]`).join("\n");
}

/** The variables --help lists, for the README's table (config.spec.ts checks the README names each). */
export function settingNames(): string[] {
  return SETTINGS.map((s) => s.env);
}
