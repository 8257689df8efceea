"""Trace context crosses the broker: the consumer span is the producer span's child."""

from __future__ import annotations

import queue

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import jobwire
from harness import WAIT_TIMEOUT, fresh_queue, running, wait_for_state, wait_until
from jobwire import JobState, PermanentError, RetryPolicy


def spans_for(spans, job_id, kind):
    return [
        s for s in spans.get_finished_spans() if s.kind == kind and s.attributes.get("messaging.message.id") == job_id
    ]


def test_trace_producer_and_consumer_spans_share_a_trace(broker, client, spans):
    q = fresh_queue("trace")
    seen: queue.Queue = queue.Queue()

    def traced(job: jobwire.LeasedJob) -> None:
        # The handler runs inside the consumer span.
        seen.put(trace.get_current_span().get_span_context())

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as outer:
        result = client.enqueue("traced", {"x": 1}, queue=q)

    with running(jobwire.Worker(broker.address, [q], 1, {"traced": traced})):
        wait_for_state(client, result.id, JobState.COMPLETED)
        consumer = wait_until("the consumer span", lambda: spans_for(spans, result.id, SpanKind.CONSUMER))[0]

    (producer,) = spans_for(spans, result.id, SpanKind.PRODUCER)
    assert producer.context.trace_id == outer.get_span_context().trace_id
    assert producer.parent.span_id == outer.get_span_context().span_id
    assert producer.attributes["messaging.system"] == "jobwire"
    assert producer.attributes["messaging.destination.name"] == q

    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.parent.is_remote
    expected = {
        "messaging.system": "jobwire",
        "messaging.destination.name": q,
        "messaging.message.id": result.id,
        "jobwire.job.attempt": 1,
        "jobwire.job.type": "traced",
        "jobwire.job.outcome": "completed",
    }
    assert {k: consumer.attributes.get(k) for k in expected} == expected
    assert seen.get(timeout=WAIT_TIMEOUT).span_id == consumer.context.span_id


def test_trace_failed_attempts_record_the_exception(broker, client, spans):
    q = fresh_queue("trace-failure")

    def fails(job: jobwire.LeasedJob) -> None:
        if job.attempt == 1:
            raise ValueError("first try fails")
        raise PermanentError("second try gives up")

    result = client.enqueue("fails", {}, queue=q, retry=RetryPolicy(initial_backoff=0.05))
    with running(jobwire.Worker(broker.address, [q], 1, {"fails": fails})):
        wait_for_state(client, result.id, JobState.DEAD)
        consumers = wait_until(
            "two consumer spans", lambda: (s := spans_for(spans, result.id, SpanKind.CONSUMER)) and len(s) == 2 and s
        )

    (producer,) = spans_for(spans, result.id, SpanKind.PRODUCER)
    by_attempt = {s.attributes["jobwire.job.attempt"]: s for s in consumers}
    assert by_attempt[1].attributes["jobwire.job.outcome"] == "retry"
    assert by_attempt[2].attributes["jobwire.job.outcome"] == "dead"
    for span in consumers:
        assert span.parent.span_id == producer.context.span_id
        assert span.status.status_code == StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]
    assert by_attempt[1].events[0].attributes["exception.type"] == "ValueError"
