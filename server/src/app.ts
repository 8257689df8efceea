import type pg from "pg";
import { Broker, type BrokerHooks } from "./broker/broker.js";
import type { Config } from "./config.js";
import { createLogger, type Logger } from "./log.js";
import { createPool } from "./store/db.js";
import { startEmbedded, type EmbeddedPostgres } from "./store/embedded.js";
import { JobStore } from "./store/jobs.js";
import { ScheduleStore } from "./store/schedules.js";
import { migrate } from "./store/migrate.js";
import { Metrics } from "./telemetry/metrics.js";
import { startTracing, tracingHooks, tracingInterceptor } from "./telemetry/tracing.js";
import { authInterceptor } from "./transport/auth.js";
import { httpRoutes } from "./transport/http.js";
import { startServer, type RunningServer } from "./transport/server.js";

/**
 * The composition root: Postgres (external or embedded), migrations, the
 * broker and its loops, and the server in front.
 */
export interface App {
  config: Config;
  url: string;
  port: number;
  databaseUrl: string;
  broker: Broker;
  pool: pg.Pool;
  /** Drains and stops everything; safe to call twice. */
  stop(): Promise<void>;
}

export interface AppOptions {
  log?: Logger;
  hooks?: BrokerHooks;
  /**
   * Emit spans through the global OpenTelemetry API. Defaults to on when an
   * OTLP exporter is configured (the broker then starts the SDK itself); an
   * embedder that registers its own tracer provider sets it to true.
   */
  tracing?: boolean;
}

/** Calls every hook set's handler for each event. */
function mergeHooks(all: BrokerHooks[]): BrokerHooks {
  const out: BrokerHooks = {};
  for (const key of ["enqueued", "leased", "acked", "failed", "replayed", "pruned"] as const) {
    const fns = all.map((h) => h[key]).filter((f): f is NonNullable<typeof f> => f !== undefined);
    if (fns.length) out[key] = ((...args: unknown[]) => fns.forEach((f) => (f as (...a: unknown[]) => void)(...args))) as never;
  }
  return out;
}

export async function startApp(config: Config, opts: AppOptions = {}): Promise<App> {
  const log = opts.log ?? createLogger(config.logLevel);
  const stopTracing = await startTracing(log);
  let embedded: EmbeddedPostgres | null = null;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await startEmbedded({ dir: config.dataDir, port: config.embeddedPgPort });
    databaseUrl = embedded.url();
    log.info("embedded Postgres started", { dataDir: config.dataDir, port: embedded.port });
  }
  const pool = createPool(databaseUrl, config.poolSize, (err) => log.warn("idle database connection failed", { err }));
  let broker: Broker | null = null;
  let server: RunningServer | null = null;
  try {
    const client = await pool.connect();
    try {
      const applied = await migrate(client);
      if (applied.length) log.info("migrations applied", { versions: applied });
    } finally {
      client.release();
    }
    const store = new JobStore(pool, { completedRetentionMs: config.completedRetentionMs });
    const metrics = new Metrics(store, () => broker?.dispatcher.openStreams ?? 0);
    const tracing = opts.tracing ?? stopTracing !== null;
    const hooks = [metrics.hooks(), ...(tracing ? [tracingHooks()] : []), ...(opts.hooks ? [opts.hooks] : [])];
    broker = new Broker(config, store, new ScheduleStore(pool), databaseUrl, log, mergeHooks(hooks));
    await broker.start();
    server = await startServer(broker, log, {
      host: config.host,
      port: config.port,
      maxMessageBytes: config.maxMessageBytes,
      // Auth first: an unauthenticated call gets no span and no work.
      interceptors: [...(config.authTokens.length ? [authInterceptor(config.authTokens)] : []), ...(tracing ? [tracingInterceptor()] : [])],
      httpRoutes: httpRoutes({ metrics, pool, log }),
    });
  } catch (err) {
    await broker?.stop().catch(() => {});
    await pool.end().catch(() => {});
    await embedded?.stop().catch(() => {});
    await stopTracing?.().catch(() => {});
    throw err;
  }
  const b = broker;
  const srv = server;
  let stopping: Promise<void> | null = null;
  return {
    config,
    url: srv.url,
    port: srv.port,
    databaseUrl,
    broker: b,
    pool,
    stop() {
      stopping ??= (async () => {
        // 1. No new leases; lease streams end with UNAVAILABLE so workers reconnect elsewhere.
        await b.drain();
        // 2. Finish calls in flight (acks, nacks, enqueues), then close connections.
        await srv.close(config.shutdownTimeoutMs);
        // 3. Background loops and the database last: calls in flight needed them.
        await b.stop();
        await pool.end();
        await embedded?.stop();
        // 4. Flush spans last, so the shutdown's own are exported.
        await stopTracing?.();
      })();
      return stopping;
    },
  };
}
