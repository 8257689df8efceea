"""jobwire.aio.Client against the fake broker: calls never block the event
loop, UNAVAILABLE is retried with asyncio.sleep, errors carry their code."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

import jobwire
import jobwire.aio
from fakebroker import FakeBroker
from harness import WAIT_TIMEOUT


@pytest.fixture()
def fake():
    broker = FakeBroker().start()
    yield broker
    broker.stop()


class Ticker:
    """A task that counts event-loop turns: it advances only while the loop
    is free to run other tasks."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.001)

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def advance(self, n: int, what: str) -> None:
        start = self.ticks
        deadline = asyncio.get_running_loop().time() + WAIT_TIMEOUT
        while self.ticks < start + n:
            assert asyncio.get_running_loop().time() < deadline, f"the loop stalled {what}"
            await asyncio.sleep(0.001)


def test_aio_enqueue_leaves_the_event_loop_running(fake):
    """A producer in an asyncio service (FastAPI, say) awaits enqueue while
    the broker takes its time to answer: its other tasks keep running."""
    fake.enqueue_gate = threading.Event()
    # A backstop: if enqueue blocked the loop, the test could never open the
    # gate itself; this opens it so that the test fails instead of hanging.
    backstop = threading.Timer(WAIT_TIMEOUT, fake.enqueue_gate.set)
    backstop.start()

    async def scenario() -> jobwire.EnqueueResult:
        async with jobwire.aio.Client(fake.address) as client:
            with Ticker() as ticker:
                pending = asyncio.get_running_loop().create_task(client.enqueue("t", {"a": 1}, queue="q"))
                # The request has reached the broker, which holds it unanswered...
                await asyncio.get_running_loop().run_in_executor(None, fake.enqueue_arrived.wait, WAIT_TIMEOUT)
                assert fake.enqueue_arrived.is_set()
                before = ticker.ticks
                # ...and meanwhile the loop keeps turning.
                await ticker.advance(20, "while enqueue awaited the broker")
                assert not pending.done()
                assert ticker.ticks >= before + 20
                fake.enqueue_gate.set()
                return await asyncio.wait_for(pending, WAIT_TIMEOUT)

    try:
        result = asyncio.run(scenario())
    finally:
        backstop.cancel()
    assert result == jobwire.EnqueueResult("new-0", False)


def test_aio_retries_unavailable_while_the_loop_runs(fake):
    fake.enqueue_failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]

    async def scenario() -> tuple[jobwire.EnqueueResult, int]:
        async with jobwire.aio.Client(fake.address) as client:
            with Ticker() as ticker:
                result = await client.enqueue("t", {}, queue="q")
                return result, ticker.ticks

    result, ticks = asyncio.run(scenario())
    assert result.id == "new-0"
    assert fake.enqueue_calls == 3
    # Two backoff waits of at least 25ms each were asyncio.sleep: the ticker ran.
    assert ticks > 1


def test_aio_errors_name_their_code(fake):
    fake.enqueue_failures = [grpc.StatusCode.PERMISSION_DENIED]

    async def scenario() -> None:
        async with jobwire.aio.Client(fake.address) as client:
            await client.enqueue("t", {}, queue="q")

    with pytest.raises(jobwire.JobwireError) as err:
        asyncio.run(scenario())
    assert err.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert str(err.value).startswith("permission_denied: ")
    assert err.value.method == "Enqueue"
    assert fake.enqueue_calls == 1


def test_aio_client_made_before_the_loop_works_inside_it(fake):
    """As a module-level object in a FastAPI app is: the channel is made on
    the loop that first uses it."""
    client = jobwire.aio.Client(fake.address)

    async def scenario() -> str:
        try:
            return (await client.enqueue("t", None, queue="q")).id
        finally:
            await client.close()

    assert asyncio.run(scenario()) == "new-0"


def test_aio_sync_handlers_are_refused():
    with pytest.raises(TypeError, match="coroutine function"):
        jobwire.aio.Worker("127.0.0.1:1", ["q"], handlers={"t": lambda job: None})
