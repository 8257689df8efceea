"""Enqueues one job from inside an active span and prints the trace ids as JSON.

For the cross-language trace scenario (test/conformance/scenarios.md,
`cross_language_trace`): another language's worker processes the job, and
its consumer span must have this producer span's trace id, and its span id
as parent. Needs opentelemetry-sdk (the `test` extra):

    clients/python/.venv/bin/python clients/python/scripts/trace_enqueue.py \\
        --address 127.0.0.1:50051 --queue q --type greet --payload '{"name":"ada"}'

prints {"job_id": ..., "trace_id": <32 hex>, "producer_span_id": <16 hex>,
"parent_span_id": <16 hex, the enclosing span>, "traceparent": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import jobwire


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--type", required=True)
    parser.add_argument("--payload", default="{}", help="JSON")
    args = parser.parse_args()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    with trace.get_tracer("jobwire.trace_enqueue").start_as_current_span("cross-language request") as outer:
        with jobwire.Client(args.address) as client:
            result = client.enqueue(args.type, json.loads(args.payload), queue=args.queue)
    (producer,) = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.PRODUCER]
    with jobwire.Client(args.address) as client:
        headers = dict(client.get_job(result.id).headers)
    json.dump(
        {
            "job_id": result.id,
            "trace_id": format(producer.context.trace_id, "032x"),
            "producer_span_id": format(producer.context.span_id, "016x"),
            "parent_span_id": format(outer.get_span_context().span_id, "016x"),
            "traceparent": headers.get("traceparent", ""),
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
