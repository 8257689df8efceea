"""The shared client scenarios of test/conformance/scenarios.md, run against a
real broker. Each test's name carries its scenario id."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest
from google.protobuf import duration_pb2

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

    def greet(job: jobwire.Job) -> None:
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

    def flaky(job: jobwire.Job) -> None:
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

    def doomed(job: jobwire.Job) -> None:
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

    def slow(job: jobwire.Job) -> None:
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


def test_conformance_cancellation(broker, client):
    q = fresh_queue("cancellation")
    started = threading.Event()
    saw_cancel = threading.Event()
    reasons: list[str | None] = []

    def waits(job: jobwire.Job) -> None:
        started.set()
        # A real handler would do its work in steps and look at the event
        # between them; this one has nothing to do but wait for it.
        if job.cancelled.wait(WAIT_TIMEOUT):
            reasons.append(job.cancel_reason)
            saw_cancel.set()

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

    assert reasons == ["cancel_requested"]
    assert seen_after < 3.0
    assert job.state == JobState.CANCELLED


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

    def slowish(job: jobwire.Job) -> None:
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
    running_jobs = client.list_jobs(queue=q, states=[JobState.RUNNING]).jobs
    assert list(running_jobs) == []


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

    def sometimes(job: jobwire.Job) -> None:
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

    def busy(job: jobwire.Job) -> None:
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
