"""jobwire.aio.Worker's mechanics against the scriptable fake broker: credit,
ack batching, heartbeats delivering cancellation as CancelledError,
reconnects, and shutdown. The threaded worker's are in test_runtime.py."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

import jobwire
import jobwire.aio
from fakebroker import FakeBroker
from harness import WAIT_TIMEOUT, arunning, await_event
from jobwire._backoff import Backoff

FAST_RECONNECT = Backoff(initial=0.02, maximum=0.1)


@pytest.fixture()
def fake():
    broker = FakeBroker().start()
    yield broker
    broker.stop()


def worker_for(fake, handlers, **kw) -> jobwire.aio.Worker:
    kw.setdefault("concurrency", 2)
    kw.setdefault("shutdown_timeout", 5.0)
    kw.setdefault("reconnect_backoff", FAST_RECONNECT)
    kw.setdefault("install_signal_handlers", False)
    return jobwire.aio.Worker(fake.address, ["q"], handlers=handlers, **kw)


async def until(fake, what, predicate):
    """fake.wait, off the loop, so that the worker's tasks keep running."""
    return await asyncio.get_running_loop().run_in_executor(None, fake.wait, what, predicate)


def test_aio_acks_share_one_call_and_credit_is_the_free_concurrency(fake):
    ids = fake.add_jobs(10)
    peak = [0, 0]

    async def scenario() -> None:
        gate = asyncio.Event()
        arrived = [0]

        async def handler(job: jobwire.aio.LeasedJob) -> None:
            peak[0] += 1
            peak[1] = max(peak[1], peak[0])
            arrived[0] += 1
            if arrived[0] == 10:
                gate.set()
            await gate.wait()
            peak[0] -= 1

        async with arunning(worker_for(fake, {"t": handler}, concurrency=10)):
            await until(fake, "10 acks", lambda: len(fake.acked()) == 10)

    asyncio.run(scenario())
    assert sorted(fake.tokens[t] for t in fake.acked()) == sorted(ids)
    # All ten finish on one loop turn; the 20ms flush window gathers them.
    assert len(fake.ack_calls) <= 2, fake.ack_calls
    assert peak[1] == 10
    (stream,) = fake.streams
    assert stream.open.max_in_flight == 10


def test_aio_never_runs_more_than_its_concurrency(fake):
    fake.add_jobs(9)
    now = [0]
    peak = [0]

    async def handler(job: jobwire.aio.LeasedJob) -> None:
        now[0] += 1
        peak[0] = max(peak[0], now[0])
        await asyncio.sleep(0.01)
        now[0] -= 1

    async def scenario() -> None:
        async with arunning(worker_for(fake, {"t": handler}, concurrency=2)):
            await until(fake, "9 acks", lambda: len(fake.acked()) == 9)

    asyncio.run(scenario())
    assert peak[0] == 2
    (stream,) = fake.streams
    assert 7 <= sum(stream.credits) <= 9


def test_aio_takes_no_more_jobs_while_the_acks_it_owes_are_twice_its_slots(fake):
    """As test_runtime's: no credit while the worker holds 2 x concurrency
    jobs, running or owing their ack; it goes once the acks are answered."""
    fake.lease_seconds = 0.6  # heartbeats every ~200ms: they show what the worker holds
    fake.hold_acks()
    ids = fake.add_jobs(200)
    seen: dict[str, int] = {}

    async def handler(job: jobwire.aio.LeasedJob) -> None:
        pass

    async def scenario() -> None:
        worker = worker_for(
            fake,
            {"t": handler},
            concurrency=10,
            ack_batch_size=5,
            ack_flush_interval=0.001,
            rpc_timeout=3 * WAIT_TIMEOUT,  # the held Ack must not time out and be sent again
        )
        async with arunning(worker):
            try:
                await until(fake, "an Ack call held at the broker", lambda: fake.acks_held >= 1)
                # Every job it took has run; it then holds back the credit for more.
                seen["held"] = await until(
                    fake, "the worker still, holding twice its slots", lambda: (n := fake.holding_still()) >= 20 and n
                )
                (stream,) = fake.streams
                seen["credit"] = stream.open.max_in_flight + sum(stream.credits)
            finally:
                fake.release_acks()
            await until(fake, "every job acked once the acks are answered", lambda: len(fake.acked()) == 200)

    asyncio.run(scenario())
    # At most twice its slots, plus the one credit batch sent just below that.
    assert seen["held"] <= 2 * 10 + 10, seen
    assert seen["credit"] <= 2 * 10 + 10, fake.streams[0].credits
    assert sorted(fake.tokens[t] for t in fake.acked()) == sorted(ids)


def test_aio_heartbeat_cancels_the_handler_task(fake):
    """cancel_requested and lost both reach the handler as CancelledError,
    with job.cancelled set first and cancel_reason saying why. A handler that
    catches it and returns is acked; a lost job's result is not sent."""
    fake.lease_seconds = 0.6  # heartbeats every ~200ms
    seen: dict[str, tuple[str | None, bool]] = {}

    async def scenario() -> None:
        all_started = asyncio.Event()
        started = [0]
        release = asyncio.Event()

        async def handler(job: jobwire.aio.LeasedJob) -> None:
            started[0] += 1
            if started[0] == 3:
                all_started.set()
            if job.id == "job-3":
                await release.wait()
                return
            try:
                await asyncio.sleep(WAIT_TIMEOUT)
            except asyncio.CancelledError:
                seen[job.id] = (job.cancel_reason, job.cancelled.is_set())
                if job.id == "job-2":
                    raise  # lost: must not be nacked
                return  # job-1: returns after CancelJob, so it is acked

        async with arunning(worker_for(fake, {"t": handler}, concurrency=3)):
            fake.add_jobs(3)
            await await_event(all_started, "three handlers")
            await until(fake, "a heartbeat of all three", lambda: any(len(h) == 3 for h in fake.heartbeats))
            by_job = {job_id: token for token, job_id in fake.tokens.items()}
            fake.cancel_tokens.add(by_job["job-1"])
            fake.lost_tokens.add(by_job["job-2"])
            while len(seen) < 2:
                await asyncio.sleep(0.01)
            release.set()
            await until(fake, "job-1 and job-3 acked", lambda: len(fake.acked()) == 2)

    asyncio.run(scenario())
    assert seen == {"job-1": ("cancel_requested", True), "job-2": ("lost", True)}
    assert sorted(fake.tokens[t] for t in fake.acked()) == ["job-1", "job-3"]
    assert fake.nacks == []


def test_aio_handler_errors_become_nacks(fake):
    async def handler(job: jobwire.aio.LeasedJob) -> None:
        if job.payload["n"] == 1:
            raise ValueError("bad n")
        raise jobwire.PermanentError("never")

    fake.add_jobs(2)
    fake.add_jobs(1, job_type="other")

    async def scenario() -> None:
        async with arunning(worker_for(fake, {"t": handler})):
            await until(fake, "3 nacks", lambda: len(fake.nacks) == 3)

    asyncio.run(scenario())
    by_job = {fake.tokens[n.lease_token]: n for n in fake.nacks}
    assert (by_job["job-1"].error, by_job["job-1"].permanent) == ("ValueError: bad n", False)
    assert (by_job["job-2"].error, by_job["job-2"].permanent) == ("never", True)
    assert by_job["job-3"].permanent and "no handler for job type 'other'" in by_job["job-3"].error


def test_aio_reconnects_after_drain_and_keeps_owed_acks(fake):
    fake.add_jobs(1)
    peak = [0, 0]

    async def scenario() -> None:
        started = asyncio.Event()
        release = asyncio.Event()

        async def handler(job: jobwire.aio.LeasedJob) -> None:
            peak[0] += 1
            peak[1] = max(peak[1], peak[0])
            started.set()
            if job.id == "job-1":
                await release.wait()
            peak[0] -= 1

        async with arunning(worker_for(fake, {"t": handler}, concurrency=1)) as worker:
            await await_event(started, "job-1 to start")
            fake.fail_acks = 2
            fake.drop_stream(grpc.StatusCode.UNAVAILABLE)
            await until(fake, "a second stream", lambda: len(fake.streams) == 2)
            fake.add_jobs(1)
            await until(fake, "job-2 delivered on the new stream", lambda: len(fake.streams[1].delivered) == 1)
            release.set()
            await until(fake, "both acks", lambda: len(fake.acked()) == 2)
            await until(fake, "credit for job-2's slot", lambda: fake.streams[1].credits == [1])
            assert worker.connected.is_set()

    asyncio.run(scenario())
    assert sorted(fake.tokens[t] for t in fake.acked()) == ["job-1", "job-2"]
    # job-1's freed slot paid back the new stream's extra credit.
    assert fake.streams[1].credits == [1]
    assert peak[1] == 1


def test_aio_stop_half_closes_and_waits_for_running_jobs(fake):
    fake.add_jobs(1)

    async def scenario() -> None:
        started = asyncio.Event()
        release = asyncio.Event()

        async def handler(job: jobwire.aio.LeasedJob) -> None:
            started.set()
            await release.wait()

        worker = worker_for(fake, {"t": handler})
        task = asyncio.get_running_loop().create_task(worker.run())
        await await_event(started, "the handler to start")
        worker.stop()
        await until(fake, "the lease stream half-closed", lambda: fake.streams[0].half_closed)
        assert not task.done(), "run() returned while a job was still running"
        release.set()
        await asyncio.wait_for(task, WAIT_TIMEOUT)

    asyncio.run(scenario())
    assert len(fake.acked()) == 1  # delivered before run() returned
    assert len(fake.streams) == 1


def test_aio_shutdown_timeout_cancels_and_nacks_unfinished_jobs(fake):
    fake.add_jobs(1)
    reasons: list[str | None] = []

    async def scenario() -> None:
        started = asyncio.Event()

        async def handler(job: jobwire.aio.LeasedJob) -> None:
            started.set()
            try:
                await asyncio.sleep(WAIT_TIMEOUT)
            except asyncio.CancelledError:
                reasons.append(job.cancel_reason)
                raise

        async with arunning(worker_for(fake, {"t": handler}, shutdown_timeout=0.2)):
            await await_event(started, "the handler to start")

    asyncio.run(scenario())
    assert reasons == ["shutdown"]
    (nack,) = fake.nacks
    assert "shut down" in nack.error and not nack.permanent
    assert nack.HasField("retry_after") and nack.retry_after.ToNanoseconds() == 0
    assert fake.acked() == []


def test_aio_refused_lease_stream_stops_the_worker_with_an_error(fake):
    fake.lease_abort = grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(jobwire.JobwireError) as err:
        asyncio.run(worker_for(fake, {}).run())
    assert err.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert str(err.value).startswith("unauthenticated: ")


def test_aio_worker_keeps_retrying_an_unreachable_broker_until_stopped():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = jobwire.aio.Worker(
        f"127.0.0.1:{port}", ["q"], 1, {}, reconnect_backoff=FAST_RECONNECT, install_signal_handlers=False
    )

    async def scenario() -> None:
        async with arunning(worker, stop_timeout=10):
            await asyncio.sleep(0.2)  # a few reconnect attempts; stop() must end the loop promptly

    asyncio.run(scenario())
    assert not worker.connected.is_set()
