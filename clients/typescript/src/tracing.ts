/**
 * OpenTelemetry glue. Only @opentelemetry/api is used: with no SDK
 * registered every call here is a cheap no-op, and an app that installs the
 * SDK gets spans without configuring this library.
 *
 * Producer side: one PRODUCER span per enqueued job, whose context is
 * injected into the job's headers (W3C traceparent/tracestate through the
 * global propagator). Consumer side: each attempt runs in a CONSUMER span
 * whose parent is the context extracted from those headers, so one trace
 * holds the enqueue and every attempt, across processes.
 */
import {
  type Attributes,
  type Context,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
  INVALID_SPAN_CONTEXT,
  ROOT_CONTEXT,
  type ProxyTracerProvider,
  context,
  propagation,
  trace,
} from "@opentelemetry/api";

export const TRACER_NAME = "@jobwire/client";
export const TRACER_VERSION = "0.1.0";
export const MESSAGING_SYSTEM = "jobwire";

/** Semantic-convention attribute keys (messaging, v1.27+), plus jobwire's own. */
export const ATTR = {
  system: "messaging.system",
  operationName: "messaging.operation.name",
  operationType: "messaging.operation.type",
  destination: "messaging.destination.name",
  messageId: "messaging.message.id",
  clientId: "messaging.client.id",
  batchCount: "messaging.batch.message_count",
  jobType: "jobwire.job.type",
  attempt: "jobwire.job.attempt",
  outcome: "jobwire.job.outcome",
  duplicate: "jobwire.job.duplicate",
} as const;

/**
 * How an attempt ended, recorded as jobwire.job.outcome: the vocabulary of
 * test/conformance/scenarios.md, the same in every client.
 *   completed      the handler returned and the ack was accepted
 *   retry          the handler failed; the nack was accepted and the job will run again
 *   dead           the handler failed permanently, or on its last attempt; the job is DEAD
 *   cancelled      CancelJob was called and the handler failed; the job is CANCELLED
 *   lease_lost     the lease was gone before the outcome could be recorded; the job runs again
 *   report_failed  the ack or nack could not reach the broker; the lease will expire and the job run again
 */
export type Outcome = "completed" | "retry" | "dead" | "cancelled" | "lease_lost" | "report_failed";

export function tracer(): Tracer {
  return trace.getTracer(TRACER_NAME, TRACER_VERSION);
}

/** The span handed out when OpenTelemetry is entirely off: non-recording, in no trace. */
export const OFF_SPAN = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * True when no tracer provider and no propagator are registered. Every span
 * and header operation is then a no-op whose result is fixed (a
 * non-recording span, headers unchanged), so the per-job span work can be
 * skipped outright; it was a visible share of CPU per job in the
 * benchmark's profiles. Checked per call: an SDK may be registered later.
 */
function otelOff(): boolean {
  const provider = trace.getTracerProvider() as Partial<ProxyTracerProvider>;
  return (
    typeof provider.getDelegateTracer === "function" &&
    provider.getDelegateTracer(TRACER_NAME) === undefined &&
    propagation.fields().length === 0
  );
}

const PROBE_KEY = Symbol("jobwire.probe");
const PROBE_CONTEXT = ROOT_CONTEXT.setValue(PROBE_KEY, true);

/**
 * True when OpenTelemetry is off (otelOff) and no context manager is
 * registered either, so context.with() is a plain call and context.active()
 * is always the root: a job's span context then has nothing to carry and the
 * worker skips making one. A registered context manager shows by carrying a
 * value through with(). Cheap, but not free: the worker asks once per lease
 * batch.
 */
export function tracingInert(): boolean {
  return otelOff() && context.with(PROBE_CONTEXT, () => context.active()) !== PROBE_CONTEXT;
}

const headerSetter: TextMapSetter<Record<string, string>> = {
  set(carrier, key, value) {
    carrier[key] = value;
  },
};

const headerGetter: TextMapGetter<Record<string, string>> = {
  keys(carrier) {
    return Object.keys(carrier);
  },
  get(carrier, key) {
    // Headers are stored as given; propagators ask in lower case.
    const direct = carrier[key];
    if (direct !== undefined) return direct;
    const lk = key.toLowerCase();
    for (const [k, v] of Object.entries(carrier)) if (k.toLowerCase() === lk) return v;
    return undefined;
  },
};

/**
 * Starts the PRODUCER span for one job and writes its context into a copy of
 * `headers`. Returns the span (the caller ends it after the RPC) and the
 * headers to send.
 */
export function startProducerSpan(
  queue: string,
  type: string,
  headers: Record<string, string>,
  batchSize: number,
): { span: Span; headers: Record<string, string> } {
  if (otelOff()) return { span: OFF_SPAN, headers: { ...headers } };
  const attributes: Attributes = {
    [ATTR.system]: MESSAGING_SYSTEM,
    [ATTR.operationName]: "send",
    [ATTR.operationType]: "send",
    [ATTR.destination]: queue,
    [ATTR.jobType]: type,
  };
  if (batchSize > 1) attributes[ATTR.batchCount] = batchSize;
  const span = tracer().startSpan(`send ${queue}`, { kind: SpanKind.PRODUCER, attributes });
  const out = { ...headers };
  propagation.inject(trace.setSpan(context.active(), span), out, headerSetter);
  return { span, headers: out };
}

export interface ConsumerSpanInfo {
  queue: string;
  type: string;
  jobId: string;
  attempt: number;
  workerId: string;
  headers: Record<string, string>;
}

/**
 * Starts the CONSUMER span for one attempt, parented to the producer's span
 * when the headers carry one. Returns the span and the context to run the
 * handler in, so spans the handler starts nest under it.
 */
export function startConsumerSpan(info: ConsumerSpanInfo): { span: Span; ctx: Context } {
  if (otelOff()) return { span: OFF_SPAN, ctx: trace.setSpan(trace.deleteSpan(context.active()), OFF_SPAN) };
  // Extract against the root context: the worker's own active context (if
  // any) must not become the parent of a job's span.
  const parent = propagation.extract(trace.deleteSpan(context.active()), info.headers, headerGetter);
  const span = tracer().startSpan(
    `process ${info.queue}`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        [ATTR.system]: MESSAGING_SYSTEM,
        [ATTR.operationName]: "process",
        [ATTR.operationType]: "process",
        [ATTR.destination]: info.queue,
        [ATTR.messageId]: info.jobId,
        [ATTR.clientId]: info.workerId,
        [ATTR.jobType]: info.type,
        [ATTR.attempt]: info.attempt,
      },
    },
    parent,
  );
  return { span, ctx: trace.setSpan(parent, span) };
}

/**
 * Writes the active trace context (W3C traceparent/tracestate, through the
 * global propagator) into a copy of `headers`. For jobs enqueued some other
 * way than JobwireClient.enqueue, such as the SQL function jobwire.enqueue
 * inside an application's transaction, so their consumer spans still join
 * the producer's trace.
 */
export function injectTraceContext(headers: Record<string, string> = {}): Record<string, string> {
  const out = { ...headers };
  propagation.inject(context.active(), out, headerSetter);
  return out;
}

/**
 * Records how an attempt ended and ends its span: a handler's failure
 * (retry, dead, cancelled) records the exception with status ERROR, and
 * completed is OK, as scenarios.md says.
 */
export function endConsumerSpan(span: Span, outcome: Outcome, error?: unknown): void {
  span.setAttribute(ATTR.outcome, outcome);
  if (error !== undefined && (outcome === "retry" || outcome === "dead" || outcome === "cancelled")) {
    span.recordException(error instanceof Error ? error : String(error));
    span.setStatus({ code: SpanStatusCode.ERROR, message: errorMessage(error) });
  } else if (outcome === "completed") {
    span.setStatus({ code: SpanStatusCode.OK });
  }
  span.end();
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/**
 * Puts the caller's trace context into a call's headers (traceparent,
 * tracestate), so a broker that traces its RPCs parents them to the
 * producer's or worker's span. transport.ts does it for every call.
 */
export function injectTraceHeaders(h: Headers): void {
  propagation.inject(context.active(), h, {
    set(target: Headers, k: string, v: string) {
      target.set(k, v);
    },
  });
}

export { context, trace, SpanStatusCode };
