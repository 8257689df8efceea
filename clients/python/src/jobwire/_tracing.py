"""OpenTelemetry spans for producing and consuming jobs, for both runtimes.

Only opentelemetry-api is used: with no SDK installed every span is a no-op.
Trace context crosses the broker in JobSpec.headers (W3C traceparent and
tracestate, or whatever the global propagator writes).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, MutableMapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from . import __version__
from .model import EnqueueResult
from .v1 import job_pb2

TRACER_NAME = "jobwire"

# Attribute names: the OpenTelemetry messaging conventions, plus jobwire's own.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_BATCH_COUNT = "messaging.batch.message_count"
JOB_TYPE = "jobwire.job.type"
JOB_ATTEMPT = "jobwire.job.attempt"
JOB_OUTCOME = "jobwire.job.outcome"
WORKER_ID = "jobwire.worker.id"

SYSTEM = "jobwire"

# How an attempt ended, in jobwire.job.outcome: the vocabulary of
# test/conformance/scenarios.md, the same in every client.
OUTCOME_COMPLETED = "completed"  # the handler returned and the ack was accepted
OUTCOME_RETRY = "retry"  # the handler failed; the nack was accepted, the job runs again
OUTCOME_DEAD = "dead"  # failed permanently or on its last attempt: DEAD
OUTCOME_CANCELLED = "cancelled"  # CancelJob was called and the handler failed: CANCELLED
OUTCOME_LEASE_LOST = "lease_lost"  # the lease was gone before the outcome was recorded
OUTCOME_REPORT_FAILED = "report_failed"  # the ack or nack never reached the broker

# Outcomes whose span records the handler's exception with status ERROR.
_FAILED = frozenset({OUTCOME_RETRY, OUTCOME_DEAD, OUTCOME_CANCELLED})


def tracer() -> trace.Tracer:
    # Looked up per use, so that a tracer provider installed after import
    # (as tests do) is honoured.
    return trace.get_tracer(TRACER_NAME, __version__)


def inject(headers: MutableMapping[str, str], span: trace.Span) -> None:
    """Writes the span's context into headers through the global propagator."""
    propagate.inject(headers, context=trace.set_span_in_context(span))


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """The context a producer injected into headers (empty when none was)."""
    return propagate.extract(dict(headers))


# -- producing -----------------------------------------------------------------


def start_producer_spans(specs: Sequence[job_pb2.JobSpec]) -> list[trace.Span]:
    """One PRODUCER span per job, its context injected into the job's headers,
    so that each job's consumer spans have their own parent; they share the
    Enqueue call's duration."""
    spans = []
    t = tracer()
    for spec in specs:
        attributes: dict[str, str | int] = {
            MESSAGING_SYSTEM: SYSTEM,
            MESSAGING_DESTINATION: spec.queue,
            MESSAGING_OPERATION_TYPE: "send",
            MESSAGING_OPERATION_NAME: "send",
            JOB_TYPE: spec.type,
        }
        if len(specs) > 1:
            attributes[MESSAGING_BATCH_COUNT] = len(specs)
        span = t.start_span(f"send {spec.queue}", kind=trace.SpanKind.PRODUCER, attributes=attributes)
        headers: dict[str, str] = {}
        inject(headers, span)
        spec.headers.update(headers)
        spans.append(span)
    return spans


def end_producer_spans(spans: Sequence[trace.Span], results: Sequence[EnqueueResult]) -> None:
    for span, result in zip(spans, results, strict=True):
        span.set_attribute(MESSAGING_MESSAGE_ID, result.id)
        span.end()


def fail_producer_spans(spans: Sequence[trace.Span], err: BaseException) -> None:
    for span in spans:
        span.record_exception(err)
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(err)))
        span.end()


# -- consuming -----------------------------------------------------------------


def start_consumer_span(job: job_pb2.Job, worker_id: str) -> trace.Span:
    """The CONSUMER span of one attempt, a child of the producer's span."""
    return tracer().start_span(
        f"process {job.queue}",
        context=extract(job.headers),
        kind=trace.SpanKind.CONSUMER,
        attributes={
            MESSAGING_SYSTEM: SYSTEM,
            MESSAGING_DESTINATION: job.queue,
            MESSAGING_MESSAGE_ID: job.id,
            MESSAGING_OPERATION_TYPE: "process",
            MESSAGING_OPERATION_NAME: "process",
            JOB_TYPE: job.type,
            JOB_ATTEMPT: job.attempt,
            WORKER_ID: worker_id,
        },
    )


class ConsumerSpan:
    """A consumer span that ends exactly once.

    The outcome is known only when the ack or nack has been answered, which
    happens on the outbox (another thread, or another task) after the handler
    returned; and shutdown may end it on behalf of a handler that never
    returns. Whichever comes first wins.
    """

    __slots__ = ("_ended", "_lock", "span")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self._lock = threading.Lock()
        self._ended = False

    def end(self, outcome: str, failure: BaseException | None = None) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        span = self.span
        span.set_attribute(JOB_OUTCOME, outcome)
        if failure is not None:
            span.record_exception(failure)
            if outcome in _FAILED or outcome == OUTCOME_REPORT_FAILED:
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(failure) or type(failure).__name__))
        elif outcome == OUTCOME_COMPLETED:
            span.set_status(trace.Status(trace.StatusCode.OK))
        elif outcome == OUTCOME_REPORT_FAILED:
            span.set_status(trace.Status(trace.StatusCode.ERROR, "the ack could not reach the broker"))
        span.end()
