"""The operator calls that watch a running system, against the real broker,
through both clients: list_workers (the open Lease streams) and
get_queue_history (the broker's sampled backlog and throughput)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid

import jobwire
import jobwire.aio
from harness import WAIT_TIMEOUT, arunning, await_event, await_until, fresh_queue, running, wait_event, wait_until

# The broker samples every queue every 10 s, and its first pass only sets the
# baseline: a new queue's first sample can take up to two intervals, plus the
# time the sample's SQL takes on a busy machine.
HISTORY_TIMEOUT = 35.0


def stream_of(workers: list[jobwire.WorkerStream], worker_id: str) -> jobwire.WorkerStream | None:
    return next((w for w in workers if w.worker_id == worker_id), None)


def test_list_workers_shows_a_running_workers_stream_with_its_queues_and_credit(broker, client):
    q, other = fresh_queue("list_workers"), fresh_queue("list_workers_other")
    worker_id = f"py-list-workers-{uuid.uuid4().hex[:8]}"
    started, release = threading.Event(), threading.Event()

    def hold(job: jobwire.LeasedJob) -> None:
        started.set()
        release.wait(WAIT_TIMEOUT)

    worker = jobwire.Worker(broker.address, [q, other], 3, {"hold": hold}, worker_id=worker_id, shutdown_timeout=5.0)
    try:
        with running(worker):
            idle = wait_until("the stream in ListWorkers", lambda: stream_of(client.list_workers(q), worker_id))
            assert isinstance(idle, jobwire.WorkerStream)
            assert set(idle.queues) == {q, other}
            assert idle.max_in_flight == 3
            assert (idle.credit, idle.jobs_held) == (3, 0)
            assert isinstance(idle.connected_at, dt.datetime) and idle.connected_at.tzinfo is not None
            assert idle.broker_id and idle.peer

            # One job held by a handler: one credit spent, one job held. (The
            # worker hands back credit only once the broker would hold less
            # than half of max_in_flight, so 2 stays 2.)
            client.enqueue("hold", {}, queue=q)
            wait_event(started, "the handler to start")
            busy = wait_until(
                "the held job in ListWorkers",
                lambda: (s := stream_of(client.list_workers(q), worker_id)) and s.jobs_held == 1 and s,
            )
            assert busy.credit == 2

            # Only the streams that lease from the queue asked about.
            assert stream_of(client.list_workers(fresh_queue("list_workers_nobody")), worker_id) is None
            assert stream_of(client.list_workers(), worker_id) is not None
            release.set()
    finally:
        release.set()
    # A stopped worker's stream is gone.
    wait_until("the stream to leave ListWorkers", lambda: stream_of(client.list_workers(q), worker_id) is None)


def test_aio_list_workers_shows_a_running_workers_stream(broker):
    q = fresh_queue("aio_list_workers")
    worker_id = f"py-aio-list-workers-{uuid.uuid4().hex[:8]}"
    started = asyncio.Event()

    async def hold(job: jobwire.aio.LeasedJob) -> None:
        started.set()
        await asyncio.sleep(WAIT_TIMEOUT)

    async def scenario() -> tuple[jobwire.WorkerStream, jobwire.WorkerStream]:
        async with jobwire.aio.Client(broker.address) as client:
            worker = jobwire.aio.Worker(
                broker.address,
                [q],
                2,
                {"hold": hold},
                worker_id=worker_id,
                shutdown_timeout=0.1,
                install_signal_handlers=False,
            )
            async with arunning(worker):

                async def find(held: int) -> jobwire.WorkerStream | None:
                    s = stream_of(await client.list_workers(q), worker_id)
                    return s if s is not None and s.jobs_held == held else None

                idle = await await_until("the stream in ListWorkers", lambda: find(0))
                await client.enqueue("hold", {}, queue=q)
                await await_event(started, "the handler to start")
                busy = await await_until("the held job in ListWorkers", lambda: find(1))
            return idle, busy

    idle, busy = asyncio.run(scenario())
    assert idle.queues == (q,) and idle.max_in_flight == 2 and idle.credit == 2
    assert busy.credit == 1 and busy.connected_at == idle.connected_at


def test_get_queue_history_returns_typed_samples_through_both_clients(broker, client):
    """One test for both clients, because a queue's first sample takes up to
    two of the broker's 10 s sampling intervals to appear."""
    q = fresh_queue("queue_history")
    client.enqueue_many([{"type": "t", "queue": q}, {"type": "t", "queue": q}])

    def sampled() -> jobwire.QueueHistory | None:
        history = client.get_queue_history(q)
        return history if any(s.available == 2 for s in history.samples) else None

    history = wait_until(f"a sample of {q} with its 2 jobs", sampled, timeout=HISTORY_TIMEOUT, interval=0.5)
    assert isinstance(history, jobwire.QueueHistory)
    assert history.interval > dt.timedelta(0)
    assert all(s.queue == q for s in history.samples)
    sample = next(s for s in history.samples if s.available == 2)
    assert isinstance(sample, jobwire.QueueSample)
    assert isinstance(sample.at, dt.datetime) and sample.at.tzinfo is not None
    assert (sample.running, sample.dead, sample.waiting) == (0, 0, 0)
    # Oldest first.
    times = [s.at for s in history.samples]
    assert times == sorted(times)
    # Every queue's history holds this queue's samples too.
    assert sample in client.get_queue_history().samples

    async def through_aio() -> jobwire.QueueHistory:
        async with jobwire.aio.Client(broker.address) as aio_client:
            return await aio_client.get_queue_history(q)

    aio_history = asyncio.run(through_aio())
    assert aio_history.interval == history.interval
    assert aio_history.samples[: len(history.samples)] == history.samples
