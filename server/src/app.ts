import net from "node:net";
import type pg from "pg";
import { Broker, type BrokerHooks } from "./broker/broker.js";
import { Dispatcher } from "./broker/dispatcher.js";
import type { Config } from "./config.js";
import { createLogger, type Logger } from "./log.js";
import { randomUUID } from "node:crypto";
import os from "node:os";
import { Counters, DEFAULT_COUNTERS_BATCH, DEFAULT_COUNTERS_INTERVAL_MS } from "./maintenance/counters.js";
import { CronLoop } from "./maintenance/cron.js";
import { DEFAULT_PRESENCE_INTERVAL_MS, DEFAULT_PRESENCE_STALE_MS, Presence } from "./maintenance/presence.js";
import { DEFAULT_SAMPLE_INTERVAL_MS, DEFAULT_SAMPLES_KEPT, Sampler } from "./maintenance/sampler.js";
import { Pruner } from "./maintenance/pruner.js";
import { Reaper } from "./maintenance/reaper.js";
import { Scheduler } from "./maintenance/scheduler.js";
import { createPool } from "./store/db.js";
import { startEmbedded, type EmbeddedPostgres } from "./store/embedded.js";
import { JobStore } from "./store/jobs.js";
import { migrate } from "./store/migrate.js";
import { Notifier } from "./store/notifier.js";
import { ScheduleStore } from "./store/schedules.js";
import { Metrics } from "./telemetry/metrics.js";
import { startTracing, streamAckTracer, tracingHooks, tracingInterceptor } from "./telemetry/tracing.js";
import { Authenticator } from "./transport/auth.js";
import { httpRoutes } from "./transport/http.js";
import { startServer, type RunningServer } from "./transport/server.js";

/**
 * The composition root: Postgres (external or embedded), migrations, the
 * store, the broker, the dispatcher and the notifier that wakes it, the
 * maintenance loops, and the server in front. Nothing else builds these;
 * the broker gets what it needs from here.
 */
export interface App {
  config: Config;
  url: string;
  port: number;
  databaseUrl: string;
  broker: Broker;
  loops: Loops;
  pool: pg.Pool;
  /** Re-reads the tokens file and the TLS files (SIGHUP); open streams are kept. */
  reload(): Promise<void>;
  /** Drains and stops everything; safe to call twice. */
  stop(): Promise<void>;
  /**
   * For an impatient second Ctrl-C: skips the drain, but still stops the
   * embedded Postgres (immediately), which would otherwise outlive us.
   */
  abort(): Promise<void>;
}

/** The maintenance loops, one file each under maintenance/; tests call their runOnce(). */
export interface Loops {
  reaper: Reaper;
  scheduler: Scheduler;
  pruner: Pruner;
  cron: CronLoop;
  presence: Presence;
  counters: Counters;
  sampler: Sampler;
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
  for (const key of ["enqueued", "leased", "completed", "acked", "lostAcks", "failed", "replayed", "pruned"] as const) {
    const fns = all.map((h) => h[key]).filter((f): f is NonNullable<typeof f> => f !== undefined);
    if (fns.length) {
      out[key] = ((...args: unknown[]) => {
        for (const f of fns) (f as (...a: unknown[]) => void)(...args);
      }) as never;
    }
  }
  return out;
}

export async function startApp(config: Config, opts: AppOptions = {}): Promise<App> {
  const log = opts.log ?? createLogger(config.logLevel);
  // A port in use is said before anything is started or migrated.
  await checkPortFree(config.host, config.port);
  const stopTracing = await startTracing(log);
  let embedded: EmbeddedPostgres | null = null;
  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    embedded = await startEmbedded({ dir: config.dataDir, port: config.embeddedPgPort });
    databaseUrl = embedded.url();
    log.info("embedded Postgres started", { dataDir: config.dataDir, port: embedded.port });
  }
  const pool = createPool(databaseUrl, config.poolSize, (err) => log.warn("idle database connection failed", { err }));
  const auth = await Authenticator.create({ tokens: config.authTokens, file: config.authFile, metrics: config.metricsAuth }, log);
  auth.watchFile();
  let notifier: Notifier | null = null;
  let loops: Loops | null = null;
  let broker: Broker | null = null;
  let server: RunningServer | null = null;
  const stopLoops = async (l: Loops | null) => {
    if (l) await Promise.all([l.reaper.stop(), l.scheduler.stop(), l.pruner.stop(), l.cron.stop(), l.presence.leave(), l.counters.stop(), l.sampler.stop()]);
  };
  try {
    const client = await pool.connect().catch((err: Error) => {
      throw new Error(`could not connect to the database${config.databaseUrl ? ` at ${where(config.databaseUrl)} (DATABASE_URL)` : ""}: ${err.message}`, {
        cause: err,
      });
    });
    try {
      const applied = await migrate(client);
      if (applied.length) log.info("migrations applied", { versions: applied });
    } finally {
      client.release();
    }
    const store = new JobStore(pool, { completedRetentionMs: config.completedRetentionMs, defaultMaxAttempts: config.defaultMaxAttempts });
    await store.writeSettings({ defaultMaxAttempts: config.defaultMaxAttempts, maxPayloadBytes: config.maxPayloadBytes });
    const schedules = new ScheduleStore(pool, config.defaultMaxAttempts);
    const dispatcher = new Dispatcher(
      store,
      { claimBatch: config.claimBatch, defaultLeaseMs: config.defaultLeaseMs, pollIntervalMs: config.pollIntervalMs, keepaliveMs: config.keepaliveMs },
      log,
      (leases) => hooks.leased?.(leases),
    );
    // The broker is built below, with the metrics' hooks; the gauges reach it when scraped.
    let brokerForGauges: Broker | null = null;
    const metrics = new Metrics(
      () => (brokerForGauges ? brokerForGauges.gauges() : Promise.reject(new Error("starting"))),
      () => dispatcher.openStreams,
      log,
    );
    const tracing = opts.tracing ?? stopTracing !== null;
    const hooks = mergeHooks([metrics.hooks(), ...(tracing ? [tracingHooks()] : []), ...(opts.hooks ? [opts.hooks] : [])]);
    const scheduler = new Scheduler(store, { intervalMs: config.schedulerIntervalMs, batch: config.reaperBatch }, log);
    const cron = new CronLoop(schedules, { intervalMs: config.schedulerIntervalMs, batch: 100 }, log);
    const sampler = new Sampler(store, { intervalMs: DEFAULT_SAMPLE_INTERVAL_MS, keep: DEFAULT_SAMPLES_KEPT }, log);
    // Unique per process, and readable: which host and process a stream is on.
    const brokerId = `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    const b = new Broker(
      config,
      store,
      schedules,
      dispatcher,
      {
        jobDueIn: (ms) => scheduler.dueIn(ms),
        scheduleDueIn: (ms) => cron.poke(ms),
        brokerId,
        history: (queue) => ({ samples: sampler.samples(queue), intervalMs: sampler.cfg.intervalMs }),
      },
      log,
      hooks,
    );
    broker = b;
    brokerForGauges = b;
    const l: Loops = {
      reaper: new Reaper(store, { intervalMs: config.reaperIntervalMs, batch: config.reaperBatch }, log, (jobs) => b.afterFailure(jobs, "lease_expired")),
      scheduler,
      pruner: new Pruner(store, { intervalMs: config.prunerIntervalMs, batch: config.prunerBatch }, log, (n) => hooks.pruned?.(n)),
      cron,
      presence: new Presence(store, brokerId, () => dispatcher.streams(brokerId), { intervalMs: DEFAULT_PRESENCE_INTERVAL_MS, staleMs: DEFAULT_PRESENCE_STALE_MS }, log),
      counters: new Counters(store, { intervalMs: DEFAULT_COUNTERS_INTERVAL_MS, batch: DEFAULT_COUNTERS_BATCH }, log),
      sampler,
    };
    notifier = new Notifier(
      databaseUrl,
      {
        onAvailable: (q) => dispatcher.wakeQueue(q),
        onScheduled: () => scheduler.poke(0),
        onResync: () => {
          dispatcher.wakeAll();
          scheduler.poke(0);
        },
      },
      log,
    );
    await notifier.start();
    for (const loop of [l.reaper, l.scheduler, l.pruner, l.cron, l.presence, l.counters, l.sampler]) loop.start();
    loops = l;
    server = await startServer(b, log, {
      host: config.host,
      port: config.port,
      maxMessageBytes: config.maxMessageBytes,
      // Auth first: an unauthenticated call gets no span and no work.
      // Authentication and scopes are checked before any of these, at the HTTP layer.
      interceptors: [metrics.rpcInterceptor(), ...(tracing ? [tracingInterceptor((tokens) => b.traceContextsOfLeases(tokens))] : [])],
      ...(tracing ? { wrapStreamAck: streamAckTracer((tokens) => b.traceContextsOfLeases(tokens)) } : {}),
      auth,
      tls: config.tlsCert && config.tlsKey ? { cert: config.tlsCert, key: config.tlsKey, clientCa: config.tlsClientCa } : null,
      requestTimeoutMs: config.requestTimeoutMs,
      maxStreamsPerConnection: config.maxStreamsPerConnection,
      httpRoutes: httpRoutes({ metrics, ready: () => b.ready(), log, authEnabled: () => auth.enabled, traceUrl: config.traceUrl }),
    });
  } catch (err) {
    auth.stop();
    await broker?.dispatcher.drain().catch(() => {});
    await stopLoops(loops).catch(() => {});
    await notifier?.stop().catch(() => {});
    await pool.end().catch(() => {});
    await embedded?.stop().catch(() => {});
    await stopTracing?.().catch(() => {});
    throw err;
  }
  const b = broker;
  const srv = server;
  const n = notifier;
  const l = loops;
  let stopping: Promise<void> | null = null;
  return {
    config,
    url: srv.url,
    port: srv.port,
    databaseUrl,
    broker: b,
    loops: l,
    pool,
    async reload() {
      await auth.reload();
      await srv.reloadTls().catch((err: Error) => log.error("TLS not reloaded; the certificate in force is unchanged", { err: err.message }));
    },
    stop() {
      stopping ??= (async () => {
        // 1. No new leases; lease streams end with UNAVAILABLE so workers reconnect elsewhere.
        await b.dispatcher.drain();
        // 2. Finish calls in flight (acks, nacks, enqueues), then close connections.
        await srv.close(config.shutdownTimeoutMs);
        // 3. Background loops and the database last: calls in flight needed them.
        await stopLoops(l);
        await n.stop();
        await pool.end();
        await embedded?.stop();
        auth.stop();
        // 4. Flush spans last, so the shutdown's own are exported.
        await stopTracing?.();
      })();
      return stopping;
    },
    async abort() {
      await embedded?.abort().catch(() => {});
    },
  };
}

/** host:port/database of a Postgres URL, without credentials, for messages. */
function where(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || 5432}${u.pathname}`;
}

/** Fails with a plain message when the broker's port is taken (port 0 is always free). */
async function checkPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === "EADDRINUSE" ? `port ${port} on ${host} is already in use (JOBWIRE_PORT)` : `cannot listen on ${host}:${port}: ${err.message}`)),
    );
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}
