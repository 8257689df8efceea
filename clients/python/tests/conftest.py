from __future__ import annotations

import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).parent))

import jobwire  # noqa: E402
from harness import Broker, broker_data_dir  # noqa: E402

# One SDK tracer provider for the whole run (OpenTelemetry allows setting the
# global provider once). Tests find their own spans by job id.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)


@pytest.fixture(scope="session")
def broker() -> Broker:
    """One broker for the session; each scenario isolates itself by queue."""
    with broker_data_dir() as data_dir:
        b = Broker(data_dir=data_dir).start()
        yield b
        code = b.stop()
        assert code == 0, f"broker exited with {code} after SIGTERM:\n" + "\n".join(b.lines[-30:])


@pytest.fixture()
def client(broker: Broker) -> jobwire.Client:
    with jobwire.Client(broker.address) as c:
        yield c


@pytest.fixture()
def spans() -> InMemorySpanExporter:
    return SPANS
