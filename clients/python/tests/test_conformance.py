"""The shared client scenarios of test/conformance/scenarios.md, run against a
real broker. Each test's name carries its scenario id."""

from __future__ import annotations

import datetime
import queue
import threading
import time

import grpc
import pytest
from google.protobuf import duration_pb2
from opentelemetry.trace import SpanKind

import jobwire
from harness import WAIT_TIMEOUT, fresh_queue, run_on_thread, running, wait_event, wait_for_state, wait_until
from jobwire import JobState, PermanentError, RetryPolicy
from jobwire.v1 import worker_service_pb2, worker_service_pb2_grpc


def make_worker(broker, queue_name, handlers, **kw) -> jobwire.Worker:
    kw.setdefault("concurrency", 2)
    kw.setdefault("shutdown_timeout", 10.0)
    return jobwire.Worker(broker.address, [queue_name], handlers=handlers, **kw)


def test_conformance_enqueue_and_process(broker, client):
    q = fresh_queue("enqueue_and_process")
    seen: queue.Queue = queue.Queue()

    def greet(job: jobwire.LeasedJob) -> None:
        seen.put((job.payload, job.type, job.queue, job.attempt, job.content_type))

    with running(make_worker(broker, q, {"greet": greet})):
        result = client.enqueue("greet", {"name": "ada"}, queue=q)
        job = wait_for_state(client, result.id, JobState.COMPLETED)

    payload, job_type, job_queue, attempt, content_type = seen.get(timeout=WAIT_TIMEOUT)
    assert payload == {"name": "ada"}
    assert (job_type, job_queue, attempt) == ("greet", q, 1)
    assert content_type == "application/json"
    assert job.attempt == 1
    assert list(job.errors) == []
    assert seen.empty(), "the handler ran more than once"


def test_conformance_transient_failure_then_retry(broker, client):
    q = fresh_queue("transient_failure_then_retry")
    attempts: list[int] = []

    def flaky(job: jobwire.LeasedJob) -> None:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("upstream timed out on attempt 1")

    with running(make_worker(broker, q, {"flaky": flaky})):
        result = client.enqueue("flaky", {"n": 1}, queue=q, retry=RetryPolicy(initial_backoff=0.05))
        job = wait_for_state(client, result.id, JobState.COMPLETED)

    assert job.attempt == 2
    assert attempts == [1, 2]
    assert len(job.errors) == 1
    assert job.errors[0].attempt == 1
    assert "upstream timed out on attempt 1" in job.errors[0].message


def test_conformance_permanent_failure_to_dead(broker, client):
    q = fresh_queue("permanent_failure_to_dead")
    calls: list[int] = []

    def doomed(job: jobwire.LeasedJob) -> None:
        calls.append(job.attempt)
        raise PermanentError("account 42 does not exist")

    with running(make_worker(broker, q, {"doomed": doomed})):
        result = client.enqueue("doomed", {}, queue=q, max_attempts=5)
        job = wait_for_state(client, result.id, JobState.DEAD)

    assert job.attempt == 1
    assert calls == [1]
    assert len(job.errors) == 1
    assert "account 42 does not exist" in job.errors[0].message


def test_conformance_heartbeat_past_the_lease(broker, client):
    q = fresh_queue("heartbeat_past_the_lease")
    calls: list[int] = []
    cancelled: list[str | None] = []

    def slow(job: jobwire.LeasedJob) -> None:
        calls.append(job.attempt)
        # The work itself: 2.5s, over two lease lengths.
        time.sleep(2.5)
        if job.cancelled.is_set():
            cancelled.append(job.cancel_reason)

    with running(make_worker(broker, q, {"slow": slow})):
        result = client.enqueue("slow", {}, queue=q, lease_duration=1.0, retry=RetryPolicy(initial_backoff=0.05))
        job = wait_for_state(client, result.id, JobState.COMPLETED)

    assert job.attempt == 1, f"redelivered: {job}"
    assert list(job.errors) == []
    assert calls == [1]
    assert cancelled == [], "the lease was reported lost while heartbeating"


class Cancelled(Exception):
    """What the cancellation scenario's handler raises once signalled."""


def consumer_outcomes(spans, job_id: str) -> list[str]:
    return [
        s.attributes["jobwire.job.outcome"]
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.CONSUMER and s.attributes.get("messaging.message.id") == job_id
    ]


def test_conformance_cancellation(broker, client, spans):
    q = fresh_queue("cancellation")
    started = threading.Event()
    saw_cancel = threading.Event()
    reasons: list[str | None] = []

    def waits(job: jobwire.LeasedJob) -> None:
        started.set()
        # A real handler would do its work in steps and look at the event
        # between them; this one has nothing to do but wait for it.
        if not job.cancelled.wait(WAIT_TIMEOUT):
            return
        reasons.append(job.cancel_reason)
        saw_cancel.set()
        # The scenario: fail when signalled, so that the runtime nacks.
        raise Cancelled(f"stopped on request ({job.cancel_reason})")

    with running(make_worker(broker, q, {"waits": waits})):
        result = client.enqueue("waits", {}, queue=q, lease_duration=1.0)
        wait_event(started, "the handler to start")
        running_job = client.cancel_job(result.id)
        assert running_job.state == JobState.RUNNING and running_job.cancel_requested, running_job
        cancel_at = time.monotonic()
        # Heartbeats come every lease/3 (about 330ms): "a few" is well under 3s.
        wait_event(saw_cancel, "the handler to see the cancellation", timeout=3.0)
        seen_after = time.monotonic() - cancel_at
        job = wait_for_state(client, result.id, JobState.CANCELLED)
        outcomes = wait_until("the consumer span", lambda: consumer_outcomes(spans, result.id))

    assert reasons == ["cancel_requested"]
    assert seen_after < 3.0
    assert job.state == JobState.CANCELLED and job.attempt == 1
    assert outcomes == ["cancelled"]


def test_conformance_cancel_then_return(broker, client, spans):
    """Finding 15 of issue 14: a handler that returns normally after CancelJob
    has done its work, so the runtime acks and the job is COMPLETED."""
    q = fresh_queue("cancel_then_return")
    started = threading.Event()
    reasons: list[str | None] = []

    def finishes(job: jobwire.LeasedJob) -> None:
        started.set()
        if job.cancelled.wait(WAIT_TIMEOUT):
            reasons.append(job.cancel_reason)

    with running(make_worker(broker, q, {"finishes": finishes})):
        result = client.enqueue("finishes", {}, queue=q, lease_duration=1.0)
        wait_event(started, "the handler to start")
        assert client.cancel_job(result.id).cancel_requested
        job = wait_for_state(client, result.id, JobState.COMPLETED)
        outcomes = wait_until("the consumer span", lambda: consumer_outcomes(spans, result.id))

    assert reasons == ["cancel_requested"]
    assert job.attempt == 1 and job.errors == ()
    assert outcomes == ["completed"]


def test_conformance_stale_lease_refused(broker, client):
    q = fresh_queue("stale_lease_refused")
    stub = worker_service_pb2_grpc.WorkerServiceStub(client.channel)
    job_id = client.enqueue("stale", {}, queue=q, retry=RetryPolicy(initial_backoff=0.05)).id

    requests: queue.Queue = queue.Queue()
    requests.put(
        worker_service_pb2.LeaseRequest(
            open=worker_service_pb2.LeaseOpen(
                queues=[q],
                worker_id="conformance-raw",
                max_in_flight=1,
                lease_duration=duration_pb2.Duration(seconds=1),
            )
        )
    )

    def request_stream():
        while (item := requests.get()) is not None:
            yield item

    call = stub.Lease(request_stream())
    leased: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for response in call:
                for lj in response.jobs:
                    leased.put(lj)
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first = leased.get(timeout=WAIT_TIMEOUT)
        assert first.job.id == job_id and first.job.attempt == 1
        # Take nothing else until the lease has expired and been reaped.
        requests.put(worker_service_pb2.LeaseRequest(credit=worker_service_pb2.LeaseCredit(count=1)))
        second = leased.get(timeout=WAIT_TIMEOUT)
        assert second.job.id == job_id
        assert second.lease_token != first.lease_token
        assert second.job.attempt == 2

        ack = stub.Ack(worker_service_pb2.AckRequest(lease_tokens=[first.lease_token]), timeout=5)
        assert list(ack.lost_lease_tokens) == [first.lease_token]

        with pytest.raises(grpc.RpcError) as nack_err:
            stub.Nack(worker_service_pb2.NackRequest(lease_token=first.lease_token, error="too late"), timeout=5)
        assert nack_err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        hb = stub.Heartbeat(worker_service_pb2.HeartbeatRequest(lease_tokens=[first.lease_token]), timeout=5)
        assert len(hb.results) == 1
        assert hb.results[0].lost is True

        # The stale calls changed nothing: the job is still running under the second lease.
        assert client.get_job(job_id).state == JobState.RUNNING

        ack2 = stub.Ack(worker_service_pb2.AckRequest(lease_tokens=[second.lease_token]), timeout=5)
        assert list(ack2.lost_lease_tokens) == []
        job = wait_for_state(client, job_id, JobState.COMPLETED)
        assert job.attempt == 2
    finally:
        requests.put(None)
        call.cancel()
        reader.join(5)


def test_conformance_graceful_shutdown(broker, client, caplog):
    q = fresh_queue("graceful_shutdown")
    started: list[str] = []
    lock = threading.Lock()
    both_started = threading.Event()
    finished: list[str] = []

    def slowish(job: jobwire.LeasedJob) -> None:
        with lock:
            started.append(job.id)
            if len(started) == 2:
                both_started.set()
        time.sleep(0.3)
        finished.append(job.id)

    worker = make_worker(broker, q, {"slowish": slowish}, concurrency=2)
    thread, run_errors = run_on_thread(worker)
    try:
        ids = [r.id for r in client.enqueue_many([{"type": "slowish", "queue": q}, {"type": "slowish", "queue": q}])]
        wait_event(both_started, "both handlers to start")
        worker.stop()  # what SIGTERM and SIGINT do
        thread.join(WAIT_TIMEOUT)
        assert not thread.is_alive(), "worker.run() did not return after stop()"
    finally:
        worker.stop()
        thread.join(WAIT_TIMEOUT)
    assert run_errors == []
    # The broker ended the stream after the half-close; the worker did not
    # have to cancel it.
    assert "did not end the lease stream" not in caplog.text
    assert sorted(finished) == sorted(ids)
    # run() returned only after the acks were delivered: no polling needed.
    for job_id in ids:
        job = client.get_job(job_id)
        assert job.state == JobState.COMPLETED, job
        assert job.attempt == 1
    assert list(client.list_jobs(queue=q, states=[JobState.RUNNING])) == []


def test_conformance_pause_and_resume(broker, client):
    q = fresh_queue("pause_and_resume")
    handled = threading.Event()
    with running(make_worker(broker, q, {"paused": lambda job: handled.set(), "warmup": lambda job: None})):
        # The worker's stream is open and leasing from the queue (the broker
        # sends nothing on an idle stream before its first keepalive, so a
        # job is the signal).
        wait_for_state(client, client.enqueue("warmup", {}, queue=q).id, JobState.COMPLETED)
        client.pause_queue(q)
        job_id = client.enqueue("paused", {}, queue=q).id
        # The scenario's fixed wait: a pause takes hold within one second, so
        # a job still AVAILABLE after 1.5s was held back by it.
        time.sleep(1.5)
        assert client.get_job(job_id).state == JobState.AVAILABLE
        (stats,) = client.get_queue_stats([q])
        assert stats.paused is True and stats.available == 1, stats
        assert not handled.is_set()
        resumed = client.resume_queue(q)
        assert resumed.paused is False
        job = wait_for_state(client, job_id, JobState.COMPLETED)
    assert job.attempt == 1
    assert handled.is_set()
    (stats,) = client.get_queue_stats([q])
    assert stats.paused is False


class Gates:
    """One gate per job, which the test opens; made on first use by either side."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}

    def __getitem__(self, job_id: str) -> threading.Event:
        with self.lock:
            return self._gates.setdefault(job_id, threading.Event())


def test_conformance_per_key_limit(broker, client):
    q = fresh_queue("per_key_limit")
    client.set_queue_config(q, max_running_per_key=1)
    gates = Gates()
    lock = threading.Lock()
    running_k = [0]
    peak_k = [0]
    started: queue.Queue = queue.Queue()

    def gated(job: jobwire.LeasedJob) -> None:
        key = job.payload["key"]
        with lock:
            if key == "k":
                running_k[0] += 1
                peak_k[0] = max(peak_k[0], running_k[0])
        started.put((job.id, key))
        try:
            if not gates[job.id].wait(WAIT_TIMEOUT):
                raise TimeoutError("the test never opened this job's gate")
        finally:
            with lock:
                if key == "k":
                    running_k[0] -= 1

    with running(make_worker(broker, q, {"gated": gated}, concurrency=4)):
        specs = [{"type": "gated", "queue": q, "payload": {"key": k}, "concurrency_key": k} for k in ("k", "k", "k")]
        specs.append({"type": "gated", "queue": q, "payload": {"key": "other"}, "concurrency_key": "other"})
        ids = [r.id for r in client.enqueue_many(specs)]
        first = [started.get(timeout=WAIT_TIMEOUT) for _ in range(2)]
        assert sorted(key for _, key in first) == ["k", "other"], first
        # The other key's job started while a k job was held.
        other_id = next(job_id for job_id, key in first if key == "other")
        current = next(job_id for job_id, key in first if key == "k")
        gates[other_id].set()
        for n in range(3):
            gates[current].set()
            wait_for_state(client, current, JobState.COMPLETED)
            if n < 2:
                current, key = started.get(timeout=WAIT_TIMEOUT)
                assert key == "k"
        for job_id in ids:
            wait_for_state(client, job_id, JobState.COMPLETED)
    assert peak_k[0] == 1
    assert started.empty()


def test_conformance_ordering_key(broker, client):
    q = fresh_queue("ordering_key")
    lock = threading.Lock()
    events: list[tuple[str, int, int]] = []

    def ordered(job: jobwire.LeasedJob) -> None:
        n = job.payload["n"]
        with lock:
            events.append(("start", n, job.attempt))
        try:
            if n == 1 and job.attempt == 1:
                raise RuntimeError("job 1 fails its first attempt")
            # Some work, so that a second job of the key running beside this
            # one would overlap it.
            time.sleep(0.1)
        finally:
            with lock:
                events.append(("end", n, job.attempt))

    with running(make_worker(broker, q, {"ordered": ordered}, concurrency=4)):
        specs = [
            {
                "type": "ordered",
                "queue": q,
                "payload": {"n": n},
                "ordering_key": "o",
                "retry": RetryPolicy(initial_backoff=0.05),
            }
            for n in (1, 2, 3)
        ]
        ids = [r.id for r in client.enqueue_many(specs)]
        for job_id in ids:
            wait_for_state(client, job_id, JobState.COMPLETED)

    starts = [(n, attempt) for kind, n, attempt in events if kind == "start"]
    assert starts == [(1, 1), (1, 2), (2, 1), (3, 1)], events
    # No overlap: every start is followed by its own end.
    assert [kind for kind, _, _ in events] == ["start", "end"] * 4, events
    assert all(events[i][1:] == events[i + 1][1:] for i in range(0, 8, 2)), events


def test_conformance_queue_config_partial(client):
    q = fresh_queue("queue_config_partial")
    first = client.set_queue_config(q, max_running=5)
    assert first is not None and first.max_running == 5
    client.set_queue_config(q, max_attempts=3)
    config = client.get_queue_config(q)
    assert config.queue == q
    assert config.max_running == 5
    assert config.max_attempts == 3


# -- beyond the shared list ----------------------------------------------------


def test_unknown_job_type_goes_dead_with_a_clear_message(broker, client):
    q = fresh_queue("unknown_type")
    with running(make_worker(broker, q, {"known": lambda job: None})):
        result = client.enqueue("mystery", {}, queue=q, max_attempts=5)
        job = wait_for_state(client, result.id, JobState.DEAD)
    assert job.attempt == 1
    assert "no handler for job type 'mystery'" in job.errors[0].message
    assert "known" in job.errors[0].message


def test_raw_bytes_payload_reaches_the_handler_untouched(broker, client):
    q = fresh_queue("raw_bytes")
    seen: queue.Queue = queue.Queue()
    blob = bytes(range(256))
    with running(make_worker(broker, q, {"blob": lambda job: seen.put((job.payload, job.content_type))})):
        result = client.enqueue("blob", blob, queue=q)
        wait_for_state(client, result.id, JobState.COMPLETED)
    assert seen.get(timeout=WAIT_TIMEOUT) == (blob, "application/octet-stream")


def test_enqueue_many_and_idempotency(broker, client):
    q = fresh_queue("enqueue_many")
    results = client.enqueue_many(
        [
            {"type": "a", "payload": {"i": 1}, "queue": q, "idempotency_key": "k1"},
            jobwire.job_spec("b", {"i": 2}, queue=q),
        ]
    )
    assert len(results) == 2 and not any(r.duplicate for r in results)
    again = client.enqueue("a", {"i": 1}, queue=q, idempotency_key="k1")
    assert again.duplicate and again.id == results[0].id
    job = client.get_job(results[1].id)
    assert job.type == "b" and job.queue == q and job.state == JobState.AVAILABLE
    assert "traceparent" in job.headers


def test_cancel_waiting_job_and_refuse_cancelling_completed(broker, client):
    q = fresh_queue("cancel_waiting")
    waiting = client.enqueue("later", {}, queue=q, delay=3600)
    assert client.get_job(waiting.id).state == JobState.SCHEDULED
    assert client.cancel_job(waiting.id).state == JobState.CANCELLED
    assert client.cancel_job(waiting.id).state == JobState.CANCELLED  # a no-op the second time

    done = client.enqueue("now", {}, queue=q)
    with running(make_worker(broker, q, {"now": lambda job: None})):
        wait_for_state(client, done.id, JobState.COMPLETED)
    with pytest.raises(jobwire.JobwireError) as err:
        client.cancel_job(done.id)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_replay_revives_a_dead_job(broker, client):
    q = fresh_queue("replay")
    fail = threading.Event()
    fail.set()

    def sometimes(job: jobwire.LeasedJob) -> None:
        if fail.is_set():
            raise PermanentError("not yet")

    with running(make_worker(broker, q, {"sometimes": sometimes})):
        result = client.enqueue("sometimes", {}, queue=q)
        wait_for_state(client, result.id, JobState.DEAD)
        fail.clear()
        dry = client.replay([result.id], dry_run=True)
        assert list(dry.job_ids) == [result.id]
        assert client.get_job(result.id).state == JobState.DEAD
        replayed = client.replay(queue=q, error_contains="not yet")
        assert replayed.replayed == 1 and list(replayed.job_ids) == [result.id]
        job = wait_for_state(client, result.id, JobState.COMPLETED)
    assert [e.message for e in job.errors] == ["not yet"]


def test_get_job_unknown_id_is_not_found(client):
    with pytest.raises(jobwire.JobwireError) as err:
        client.get_job("00000000-0000-0000-0000-000000000000")
    assert err.value.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


def test_worker_never_runs_more_than_its_concurrency(broker, client):
    q = fresh_queue("concurrency")
    lock = threading.Lock()
    now = [0]
    peak = [0]
    done = [0]

    def busy(job: jobwire.LeasedJob) -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.05)
        with lock:
            now[0] -= 1
            done[0] += 1

    with running(make_worker(broker, q, {"busy": busy}, concurrency=3)):
        ids = [r.id for r in client.enqueue_many([{"type": "busy", "queue": q} for _ in range(20)])]
        wait_until("all 20 jobs to finish", lambda: done[0] == 20)
        for job_id in ids:
            wait_for_state(client, job_id, JobState.COMPLETED)
    assert peak[0] <= 3
    assert peak[0] >= 2, "the worker never ran jobs in parallel"


def test_set_queue_config_clears_a_field_through_update_mask(client):
    q = fresh_queue("queue_config_clear")
    client.set_queue_config(q, max_running=5, max_attempts=3, rate_limit=jobwire.RateLimit(10, 1.5))
    after = client.set_queue_config(q, max_running=None)
    assert after is not None
    config = client.get_queue_config(q)
    assert config == after
    assert config.max_running is None
    assert config.max_attempts == 3
    assert config.rate_limit == jobwire.RateLimit(10, datetime.timedelta(seconds=1.5))


def test_list_jobs_paginates_with_filters(broker, client):
    q = fresh_queue("list_jobs")
    ids = [r.id for r in client.enqueue_many([{"type": "a" if i % 2 else "b", "queue": q} for i in range(7)])]
    pages = client.list_jobs(queue=q, page_size=2)
    listed = list(pages)
    assert [j.id for j in listed] == sorted(ids, key=int, reverse=True)  # newest first
    assert all(isinstance(j, jobwire.Job) and j.state is JobState.AVAILABLE for j in listed)
    assert [len(p) for p in pages.pages()] == [2, 2, 2, 1]
    only_a = list(client.list_jobs(queue=q, type="a", states=[JobState.AVAILABLE], page_size=2))
    assert sorted(j.id for j in only_a) == sorted(ids[1::2])
    assert list(client.list_jobs(queue=q, states=[JobState.DEAD])) == []


def test_get_job_is_typed(client):
    q = fresh_queue("typed")
    job_id = client.enqueue("typed", {"x": 1}, queue=q, priority=3, delay=3600).id
    job = client.get_job(job_id)
    assert isinstance(job, jobwire.Job)
    assert job.state is JobState.SCHEDULED and str(job.state) == "SCHEDULED" and f"{job.state}" == "SCHEDULED"
    assert job.payload == {"x": 1} and job.priority == 3
    assert job.run_at is not None and job.run_at.tzinfo is not None
    assert job.run_at > job.created_at + datetime.timedelta(minutes=59)
    assert "SCHEDULED" in repr(job)


def test_get_queue_stats(broker, client):
    q = fresh_queue("stats")
    client.enqueue_many([{"type": "s", "queue": q}, {"type": "s", "queue": q, "delay": 3600}])
    (stats,) = client.get_queue_stats([q])
    assert isinstance(stats, jobwire.QueueStats)
    assert (stats.queue, stats.available, stats.scheduled, stats.running) == (q, 1, 1, 0)
    assert stats.paused is False
    assert stats.oldest_available_age >= datetime.timedelta(0)
