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


def _probe(broker: Broker, feature: str, call) -> None:
    """Skips the tests that need a broker feature when, and only when, the
    broker answers UNIMPLEMENTED; they run by themselves once it has it."""
    import grpc

    with jobwire.Client(broker.address) as c:
        try:
            call(c)
        except jobwire.JobwireError as err:
            if err.code is grpc.StatusCode.UNIMPLEMENTED:
                pytest.skip(f"the broker does not implement {feature} yet ({err})")
            # Any other answer means the RPC exists: the tests run, and say
            # what is wrong with it.


@pytest.fixture(scope="session")
def queue_config_api(broker: Broker) -> None:
    """GetQueueConfig exists: queue configs, max_running_per_key and ordering
    keys (issue 11) are in the broker."""
    _probe(broker, "GetQueueConfig", lambda c: c.get_queue_config("conf-probe-config"))


@pytest.fixture(scope="session")
def pause_api(broker: Broker) -> None:
    """ResumeQueue exists (idempotent, so probing it changes nothing)."""
    _probe(broker, "PauseQueue/ResumeQueue", lambda c: c.resume_queue("conf-probe-pause"))
