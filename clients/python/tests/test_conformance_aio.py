"""The shared scenarios of test/conformance/scenarios.md, run with the asyncio
runtime (jobwire.aio.Client and jobwire.aio.Worker) against the real broker.
Each test's name carries its scenario id, after ``aio_``.

``stale_lease_refused`` is not here: it drives the Lease stream by hand and
tests the broker, which test_conformance.py does once."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, TypeVar

from opentelemetry.trace import SpanKind

import jobwire
import jobwire.aio
from harness import WAIT_TIMEOUT, arunning, await_event, await_state, await_until, fresh_queue
from jobwire import JobState, PermanentError, RetryPolicy

T = TypeVar("T")


def aio_worker(broker, queue_name, handlers, **kw) -> jobwire.aio.Worker:
    kw.setdefault("concurrency", 2)
    kw.setdefault("shutdown_timeout", 10.0)
    kw.setdefault("install_signal_handlers", False)
    return jobwire.aio.Worker(broker.address, [queue_name], handlers=handlers, **kw)


def with_client(broker, scenario: Callable[[jobwire.aio.Client], Awaitable[T]]) -> T:
    async def main() -> T:
        async with jobwire.aio.Client(broker.address) as client:
            return await scenario(client)

    return asyncio.run(main())


def consumer_outcomes(spans, job_id: str) -> list[str]:
    return [
        s.attributes["jobwire.job.outcome"]
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.CONSUMER and s.attributes.get("messaging.message.id") == job_id
    ]


def test_aio_conformance_enqueue_and_process(broker, spans):
    q = fresh_queue("enqueue_and_process")
    seen: list[tuple[Any, ...]] = []

    async def greet(job: jobwire.aio.LeasedJob) -> None:
        await asyncio.sleep(0)
        seen.append((job.payload, job.type, job.queue, job.attempt, job.content_type))

    async def scenario(client: jobwire.aio.Client) -> tuple[jobwire.Job, str]:
        async with arunning(aio_worker(broker, q, {"greet": greet})):
            result = await client.enqueue("greet", {"name": "ada"}, queue=q)
            job = await await_state(client, result.id, JobState.COMPLETED)

        async def outcome() -> list[str]:
            return consumer_outcomes(spans, result.id)

        return job, (await await_until("the consumer span", outcome))[0]

    job, outcome = with_client(broker, scenario)
    assert seen == [({"name": "ada"}, "greet", q, 1, "application/json")]
    assert job.attempt == 1 and job.errors == ()
    assert outcome == "completed"


def test_aio_conformance_transient_failure_then_retry(broker):
    q = fresh_queue("transient_failure_then_retry")
    attempts: list[int] = []

    async def flaky(job: jobwire.aio.LeasedJob) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("upstream timed out on attempt 1")

    async def scenario(client: jobwire.aio.Client) -> jobwire.Job:
        async with arunning(aio_worker(broker, q, {"flaky": flaky})):
            result = await client.enqueue("flaky", {"n": 1}, queue=q, retry=RetryPolicy(initial_backoff=0.05))
            return await await_state(client, result.id, JobState.COMPLETED)

    job = with_client(broker, scenario)
    assert job.attempt == 2 and attempts == [1, 2]
    (error,) = job.errors
    assert error.attempt == 1 and "upstream timed out on attempt 1" in error.message


def test_aio_conformance_permanent_failure_to_dead(broker):
    q = fresh_queue("permanent_failure_to_dead")
    calls: list[int] = []

    async def doomed(job: jobwire.aio.LeasedJob) -> None:
        calls.append(job.attempt)
        raise PermanentError("account 42 does not exist")

    async def scenario(client: jobwire.aio.Client) -> jobwire.Job:
        async with arunning(aio_worker(broker, q, {"doomed": doomed})):
            result = await client.enqueue("doomed", {}, queue=q, max_attempts=5)
            return await await_state(client, result.id, JobState.DEAD)

    job = with_client(broker, scenario)
    assert job.attempt == 1 and calls == [1]
    assert len(job.errors) == 1 and "account 42 does not exist" in job.errors[0].message


def test_aio_conformance_heartbeat_past_the_lease(broker):
    q = fresh_queue("heartbeat_past_the_lease")
    calls: list[int] = []

    async def slow(job: jobwire.aio.LeasedJob) -> None:
        calls.append(job.attempt)
        await asyncio.sleep(2.5)  # the work itself: over two lease lengths

    async def scenario(client: jobwire.aio.Client) -> jobwire.Job:
        async with arunning(aio_worker(broker, q, {"slow": slow})):
            result = await client.enqueue("slow", {}, queue=q, lease_duration=1.0, retry=RetryPolicy(initial_backoff=0.05))
            return await await_state(client, result.id, JobState.COMPLETED)

    job = with_client(broker, scenario)
    assert job.attempt == 1, f"redelivered: {job}"
    assert job.errors == () and calls == [1]


def test_aio_conformance_cancellation(broker, spans):
    """The handler waits on its cancellation signal: the task is cancelled,
    and the CancelledError propagates (it fails when signalled), so the
    runtime nacks and the broker makes the job CANCELLED."""
    q = fresh_queue("cancellation")
    reasons: list[str | None] = []

    async def scenario(client: jobwire.aio.Client) -> tuple[jobwire.Job, float, list[str]]:
        started = asyncio.Event()
        saw_cancel = asyncio.Event()

        async def waits(job: jobwire.aio.LeasedJob) -> None:
            started.set()
            try:
                await asyncio.sleep(WAIT_TIMEOUT)
            except asyncio.CancelledError:
                reasons.append(job.cancel_reason)
                saw_cancel.set()
                raise

        async with arunning(aio_worker(broker, q, {"waits": waits})):
            result = await client.enqueue("waits", {}, queue=q, lease_duration=1.0)
            await await_event(started, "the handler to start")
            running = await client.cancel_job(result.id)
            assert running.state is JobState.RUNNING and running.cancel_requested, running
            cancel_at = time.monotonic()
            await await_event(saw_cancel, "the handler to see the cancellation", timeout=3.0)
            seen_after = time.monotonic() - cancel_at
            job = await await_state(client, result.id, JobState.CANCELLED)

            async def outcome() -> list[str]:
                return consumer_outcomes(spans, result.id)

            return job, seen_after, await await_until("the consumer span", outcome)

    job, seen_after, outcomes = with_client(broker, scenario)
    assert reasons == ["cancel_requested"]
    assert seen_after < 3.0  # heartbeats come every lease/3, about 330ms
    assert job.attempt == 1
    assert outcomes == ["cancelled"]


def test_aio_conformance_cancel_then_return(broker, spans):
    """The handler waits on its cancellation signal and then returns: the
    runtime acks, and the job is COMPLETED."""
    q = fresh_queue("cancel_then_return")
    reasons: list[str | None] = []

    async def scenario(client: jobwire.aio.Client) -> tuple[jobwire.Job, list[str]]:
        started = asyncio.Event()

        async def finishes(job: jobwire.aio.LeasedJob) -> None:
            started.set()
            try:
                await job.cancelled.wait()
            except asyncio.CancelledError:
                reasons.append(job.cancel_reason)
                return  # stopped cleanly: the work is done

        async with arunning(aio_worker(broker, q, {"finishes": finishes})):
            result = await client.enqueue("finishes", {}, queue=q, lease_duration=1.0)
            await await_event(started, "the handler to start")
            assert (await client.cancel_job(result.id)).cancel_requested
            job = await await_state(client, result.id, JobState.COMPLETED)

            async def outcome() -> list[str]:
                return consumer_outcomes(spans, result.id)

            return job, await await_until("the consumer span", outcome)

    job, outcomes = with_client(broker, scenario)
    assert reasons == ["cancel_requested"]
    assert job.attempt == 1 and job.errors == ()
    assert outcomes == ["completed"]


def test_aio_conformance_graceful_shutdown(broker):
    q = fresh_queue("graceful_shutdown")
    finished: list[str] = []

    async def scenario(client: jobwire.aio.Client) -> tuple[list[str], list[jobwire.Job]]:
        both_started = asyncio.Event()
        started: list[str] = []

        async def slowish(job: jobwire.aio.LeasedJob) -> None:
            started.append(job.id)
            if len(started) == 2:
                both_started.set()
            await asyncio.sleep(0.3)
            finished.append(job.id)

        worker = aio_worker(broker, q, {"slowish": slowish}, concurrency=2)
        task = asyncio.get_running_loop().create_task(worker.run())
        ids = [r.id for r in await client.enqueue_many([{"type": "slowish", "queue": q}] * 2)]
        await await_event(both_started, "both handlers to start")
        worker.stop()  # what SIGTERM and SIGINT do
        await asyncio.wait_for(task, WAIT_TIMEOUT)
        # run() returned only after the acks were delivered: no polling needed.
        jobs = [await client.get_job(i) for i in ids]
        running = [j async for j in client.list_jobs(queue=q, states=[JobState.RUNNING])]
        assert running == []
        return ids, jobs

    ids, jobs = with_client(broker, scenario)
    assert sorted(finished) == sorted(ids)
    assert [(j.state, j.attempt) for j in jobs] == [(JobState.COMPLETED, 1)] * 2


def test_aio_conformance_pause_and_resume(broker):
    q = fresh_queue("pause_and_resume")
    handled: list[str] = []

    async def paused(job: jobwire.aio.LeasedJob) -> None:
        handled.append(job.id)

    async def warmup(job: jobwire.aio.LeasedJob) -> None:
        pass

    async def scenario(client: jobwire.aio.Client) -> jobwire.Job:
        async with arunning(aio_worker(broker, q, {"paused": paused, "warmup": warmup})):
            # The stream is open and leasing from the queue: a job is the signal.
            await await_state(client, (await client.enqueue("warmup", {}, queue=q)).id, JobState.COMPLETED)
            await client.pause_queue(q)
            job_id = (await client.enqueue("paused", {}, queue=q)).id
            await asyncio.sleep(1.5)  # the scenario's wait: a pause takes hold within 1s
            assert (await client.get_job(job_id)).state is JobState.AVAILABLE
            (stats,) = await client.get_queue_stats([q])
            assert stats.paused is True and stats.available == 1, stats
            assert handled == []
            await client.resume_queue(q)
            return await await_state(client, job_id, JobState.COMPLETED)

    job = with_client(broker, scenario)
    assert job.attempt == 1 and handled == [job.id]


def test_aio_conformance_per_key_limit(broker):
    q = fresh_queue("per_key_limit")
    running_k = [0]
    peak_k = [0]

    async def scenario(client: jobwire.aio.Client) -> None:
        await client.set_queue_config(q, max_running_per_key=1)
        gates: dict[str, asyncio.Event] = {}
        started: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

        async def gated(job: jobwire.aio.LeasedJob) -> None:
            key = job.payload["key"]
            if key == "k":
                running_k[0] += 1
                peak_k[0] = max(peak_k[0], running_k[0])
            started.put_nowait((job.id, key))
            try:
                await asyncio.wait_for(gates.setdefault(job.id, asyncio.Event()).wait(), WAIT_TIMEOUT)
            finally:
                if key == "k":
                    running_k[0] -= 1

        async def next_start() -> tuple[str, str]:
            return await asyncio.wait_for(started.get(), WAIT_TIMEOUT)

        async with arunning(aio_worker(broker, q, {"gated": gated}, concurrency=4)):
            specs = [{"type": "gated", "queue": q, "payload": {"key": "k"}, "concurrency_key": "k"}] * 3
            specs.append({"type": "gated", "queue": q, "payload": {"key": "other"}, "concurrency_key": "other"})
            ids = [r.id for r in await client.enqueue_many(specs)]
            first = [await next_start(), await next_start()]
            assert sorted(key for _, key in first) == ["k", "other"], first
            other_id = next(job_id for job_id, key in first if key == "other")
            current = next(job_id for job_id, key in first if key == "k")
            gates.setdefault(other_id, asyncio.Event()).set()
            for n in range(3):
                gates.setdefault(current, asyncio.Event()).set()
                await await_state(client, current, JobState.COMPLETED)
                if n < 2:
                    current, key = await next_start()
                    assert key == "k"
            for job_id in ids:
                await await_state(client, job_id, JobState.COMPLETED)
            assert started.empty()

    with_client(broker, scenario)
    assert peak_k[0] == 1


def test_aio_conformance_ordering_key(broker):
    q = fresh_queue("ordering_key")
    events: list[tuple[str, int, int]] = []

    async def ordered(job: jobwire.aio.LeasedJob) -> None:
        n = job.payload["n"]
        events.append(("start", n, job.attempt))
        try:
            if n == 1 and job.attempt == 1:
                raise RuntimeError("job 1 fails its first attempt")
            await asyncio.sleep(0.1)  # some work, that a second job of the key would overlap
        finally:
            events.append(("end", n, job.attempt))

    async def scenario(client: jobwire.aio.Client) -> None:
        async with arunning(aio_worker(broker, q, {"ordered": ordered}, concurrency=4)):
            specs = [
                {"type": "ordered", "queue": q, "payload": {"n": n}, "ordering_key": "o", "retry": RetryPolicy(0.05)}
                for n in (1, 2, 3)
            ]
            for result in await client.enqueue_many(specs):
                await await_state(client, result.id, JobState.COMPLETED)

    with_client(broker, scenario)
    starts = [(n, attempt) for kind, n, attempt in events if kind == "start"]
    assert starts == [(1, 1), (1, 2), (2, 1), (3, 1)], events
    assert [kind for kind, _, _ in events] == ["start", "end"] * 4, events


def test_aio_conformance_queue_config_partial(broker):
    q = fresh_queue("queue_config_partial")

    async def scenario(client: jobwire.aio.Client) -> jobwire.QueueConfig:
        await client.set_queue_config(q, max_running=5)
        await client.set_queue_config(q, max_attempts=3)
        return await client.get_queue_config(q)

    config = with_client(broker, scenario)
    assert (config.queue, config.max_running, config.max_attempts) == (q, 5, 3)


def test_aio_list_jobs_paginates(broker):
    q = fresh_queue("aio_list_jobs")

    async def scenario(client: jobwire.aio.Client) -> tuple[list[str], list[str], list[int]]:
        ids = [r.id for r in await client.enqueue_many([{"type": "x", "queue": q}] * 5)]
        pages = client.list_jobs(queue=q, page_size=2)
        listed = [job.id async for job in pages]
        sizes = [len(page) async for page in pages.pages()]
        return ids, listed, sizes

    ids, listed, sizes = with_client(broker, scenario)
    assert listed == sorted(ids, key=int, reverse=True)
    assert sizes == [2, 2, 1]


def test_aio_trace_consumer_span_is_the_producer_spans_child(broker, spans):
    from opentelemetry import trace

    q = fresh_queue("aio_trace")
    seen: list[Any] = []

    async def traced(job: jobwire.aio.LeasedJob) -> None:
        seen.append(trace.get_current_span().get_span_context())

    async def scenario(client: jobwire.aio.Client) -> str:
        with trace.get_tracer("test").start_as_current_span("request"):
            job_id = (await client.enqueue("traced", {}, queue=q)).id
        async with arunning(aio_worker(broker, q, {"traced": traced})):
            await await_state(client, job_id, JobState.COMPLETED)

            async def consumer() -> list[Any]:
                return [
                    s
                    for s in spans.get_finished_spans()
                    if s.kind == SpanKind.CONSUMER and s.attributes.get("messaging.message.id") == job_id
                ]

            await await_until("the consumer span", consumer)
        return job_id

    job_id = with_client(broker, scenario)
    by_kind = {
        s.kind: s for s in spans.get_finished_spans() if s.attributes.get("messaging.message.id") == job_id
    }
    producer, consumer = by_kind[SpanKind.PRODUCER], by_kind[SpanKind.CONSUMER]
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes["jobwire.job.outcome"] == "completed"
    assert seen[0].span_id == consumer.context.span_id
