"""OpenTelemetry spans for producing and consuming jobs.

Only opentelemetry-api is used: with no SDK installed every span is a no-op.
Trace context crosses the broker in JobSpec.headers (W3C traceparent and
tracestate, or whatever the global propagator writes).
"""

from __future__ import annotations

from typing import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from . import __version__

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

SYSTEM = "jobwire"

# The outcomes a consumer span records in jobwire.job.outcome.
OUTCOME_COMPLETED = "completed"  # the handler returned; the job is acked
OUTCOME_FAILED = "failed"  # an ordinary exception; nacked for a retry
OUTCOME_FAILED_PERMANENT = "failed_permanent"  # PermanentError or no handler; nacked to DEAD
OUTCOME_CANCELLED = "cancelled"  # returned after CancelJob; nacked, the broker cancels it
OUTCOME_LOST = "lost"  # the lease was lost while running; nothing is sent
OUTCOME_ABANDONED = "abandoned"  # still running when shutdown gave up; nacked


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
