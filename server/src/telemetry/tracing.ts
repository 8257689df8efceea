import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Link, type TextMapGetter } from "@opentelemetry/api";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { BrokerHooks } from "../broker/broker.js";
import type { Logger } from "../log.js";
import type { FailedJob } from "../model.js";

/**
 * OpenTelemetry in the broker. The SDK starts only when an exporter is
 * configured (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
 * or OTEL_TRACES_EXPORTER), so an untraced broker pays nothing per job.
 *
 * Spans:
 *   - one SERVER span per unary RPC, parented to the caller's traceparent
 *     (from gRPC metadata, or for Enqueue from the first job's headers);
 *   - per job, in the job's own trace (the producer's traceparent, kept in
 *     the job's headers): "deliver" when a worker leases it, "lease expired"
 *     when the reaper takes it back, "dead-letter" when it dies, "replay"
 *     when an operator revives it;
 *   - the Ack, Nack and Replay RPC spans link to the trace of every job
 *     they settle or revive. One Ack settles jobs of many traces (workers
 *     batch them), so it cannot be the child of any one: links are how
 *     OpenTelemetry ties one operation to several traces.
 */
export const TRACER_NAME = "jobwire-broker";

export function tracingConfigured(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || (env.OTEL_TRACES_EXPORTER && env.OTEL_TRACES_EXPORTER !== "none"));
}

/** Starts the SDK if configured; returns its shutdown (which flushes), or null. */
export async function startTracing(log: Logger): Promise<(() => Promise<void>) | null> {
  if (!tracingConfigured()) return null;
  const { NodeSDK } = await import("@opentelemetry/sdk-node");
  const sdk = new NodeSDK({ serviceName: process.env.OTEL_SERVICE_NAME || "jobwire-broker", instrumentations: [] });
  sdk.start();
  log.info("OpenTelemetry tracing on", { endpoint: process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT });
  return () => sdk.shutdown();
}

const recordGetter: TextMapGetter<Record<string, string>> = {
  keys: (c) => Object.keys(c),
  get: (c, k) => c[k],
};
const headersGetter: TextMapGetter<Headers> = {
  keys: (h) => [...h.keys()],
  get: (h, k) => h.get(k) ?? undefined,
};

function jobContext(headers: Record<string, string>): Context {
  return propagation.extract(ROOT_CONTEXT, headers, recordGetter);
}

function jobAttributes(j: { id: string; queue: string; attempt?: number }) {
  return {
    "messaging.system": "jobwire",
    "messaging.destination.name": j.queue,
    "messaging.message.id": j.id,
    ...(j.attempt === undefined ? {} : { "jobwire.job.attempt": j.attempt }),
  };
}

/** A short span in the job's own trace, for something only the broker sees. */
function jobEvent(name: string, j: { id: string; queue: string; attempt?: number; headers: Record<string, string> }, extra: Record<string, string | number> = {}, error = false): void {
  if (!j.headers.traceparent) return;
  const tracer = trace.getTracer(TRACER_NAME);
  const span = tracer.startSpan(`${name} ${j.queue}`, { kind: SpanKind.INTERNAL, attributes: { ...jobAttributes(j), ...extra } }, jobContext(j.headers));
  if (error) span.setStatus({ code: SpanStatusCode.ERROR, message: name });
  span.end();
}

export function tracingHooks(): BrokerHooks {
  return {
    leased(leases) {
      for (const l of leases) jobEvent("deliver", { ...l.job, headers: l.job.headers }, { "jobwire.worker.id": l.job.workerId ?? "" });
    },
    failed(jobs: FailedJob[], cause) {
      for (const j of jobs) {
        if (cause === "lease_expired") jobEvent("lease expired", j, { "jobwire.job.next_state": j.state }, true);
        if (j.state === "dead") jobEvent("dead-letter", j, { "jobwire.job.cause": cause }, true);
      }
    },
    replayed(jobs) {
      for (const j of jobs) jobEvent("replay", j);
      // Inside the Replay RPC (the interceptor's context), whose span is still open.
      trace.getActiveSpan()?.addLinks(linksTo(jobs.map((j) => j.headers)));
    },
  };
}

/** Links to the traces the given job headers carry; at most one per trace. */
function linksTo(headers: Record<string, string>[]): Link[] {
  const links: Link[] = [];
  const seen = new Set<string>();
  for (const h of headers) {
    const sc = trace.getSpanContext(jobContext(h));
    if (!sc || seen.has(sc.traceId) || links.length >= MAX_LINKS) continue;
    seen.add(sc.traceId);
    links.push({ context: sc });
  }
  return links;
}

/** Links per span: an Ack holds up to 10,000 tokens, and backends cap links (Jaeger shows all, Tempo keeps 128). */
const MAX_LINKS = 128;

/** The lease tokens a settling RPC names, whose jobs its span links to. */
function leaseTokensOf(req: { method: { name: string }; service: { typeName: string }; message: unknown }): readonly string[] | null {
  if (req.service.typeName !== "jobwire.v1.WorkerService") return null;
  const m = req.message as { leaseTokens?: string[]; leaseToken?: string };
  if (req.method.name === "Ack") return m.leaseTokens ?? [];
  if (req.method.name === "Nack") return m.leaseToken ? [m.leaseToken] : [];
  return null;
}

/**
 * A span for an ack sent on a Lease stream, standing in for the Ack call's
 * SERVER span: the same name as the stream's method plus "ack", links to
 * the jobs' traces (found as for Ack), and the outcome.
 */
export function streamAckTracer(traceContextsOfLeases: (tokens: readonly string[]) => Promise<Record<string, string>[]>) {
  return async <T>(tokens: readonly string[], run: () => Promise<T>): Promise<T> => {
    const links = linksTo(await traceContextsOfLeases(tokens).catch(() => []));
    const span = trace.getTracer(TRACER_NAME).startSpan(
      "jobwire.v1.WorkerService/Lease ack",
      {
        kind: SpanKind.SERVER,
        links,
        attributes: { "rpc.system": "grpc", "rpc.service": "jobwire.v1.WorkerService", "rpc.method": "Lease", "jobwire.ack.tokens": tokens.length },
      },
      ROOT_CONTEXT,
    );
    try {
      return await context.with(trace.setSpan(ROOT_CONTEXT, span), run);
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  };
}

/**
 * SERVER spans for unary RPCs (a Lease stream can live for hours, so it
 * gets none). `traceContextsOfLeases` finds the trace context of the jobs
 * an Ack or Nack settles, for its span's links: one indexed query per call,
 * paid only when tracing is on.
 */
export function tracingInterceptor(traceContextsOfLeases?: (tokens: readonly string[]) => Promise<Record<string, string>[]>): Interceptor {
  return (next) => async (req) => {
    if (req.stream) return next(req);
    let parent = propagation.extract(ROOT_CONTEXT, req.header, headersGetter);
    const links: Link[] = [];
    const tokens = traceContextsOfLeases ? leaseTokensOf(req) : null;
    if (tokens && tokens.length > 0) {
      // A failed lookup costs the links, never the call.
      links.push(...linksTo(await traceContextsOfLeases!(tokens).catch(() => [])));
    }
    if (!trace.getSpanContext(parent) && req.method.name === "Enqueue") {
      // Producers often put trace context only in the jobs' headers.
      const jobs = (req.message as { jobs?: { headers: Record<string, string> }[] }).jobs ?? [];
      jobs.forEach((j, i) => {
        const ctx = jobContext(j.headers);
        const sc = trace.getSpanContext(ctx);
        if (!sc) return;
        if (i === 0) parent = ctx;
        else links.push({ context: sc });
      });
    }
    const tracer = trace.getTracer(TRACER_NAME);
    const span = tracer.startSpan(
      `${req.service.typeName}/${req.method.name}`,
      {
        kind: SpanKind.SERVER,
        links,
        attributes: { "rpc.system": "grpc", "rpc.service": req.service.typeName, "rpc.method": req.method.name },
      },
      parent,
    );
    try {
      const res = await context.with(trace.setSpan(parent, span), () => next(req));
      span.setAttribute("rpc.grpc.status_code", 0); // OK
      return res;
    } catch (err) {
      const code = err instanceof ConnectError ? err.code : Code.Unknown;
      span.setAttribute("rpc.grpc.status_code", code as number);
      if (code === Code.Internal || code === Code.Unknown || code === Code.Unavailable) {
        span.recordException(err as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      }
      throw err;
    } finally {
      span.end();
    }
  };
}
