"""The worker runtime's mechanics against a scriptable fake broker: credit,
ack batching, heartbeats, reconnects and shutdown."""

from __future__ import annotations

import threading

import grpc
import pytest

import jobwire
from fakebroker import FakeBroker
from harness import WAIT_TIMEOUT, running, wait_event, wait_until
from jobwire._backoff import Backoff

FAST_RECONNECT = Backoff(initial=0.02, maximum=0.1)


@pytest.fixture()
def fake():
    broker = FakeBroker().start()
    yield broker
    broker.stop()


def worker_for(fake, handlers, **kw) -> jobwire.Worker:
    kw.setdefault("concurrency", 2)
    kw.setdefault("shutdown_timeout", 5.0)
    kw.setdefault("reconnect_backoff", FAST_RECONNECT)
    return jobwire.Worker(fake.address, ["q"], handlers=handlers, **kw)


class Peak:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


def test_acks_from_jobs_finishing_together_share_one_call(fake):
    barrier = threading.Barrier(10, timeout=WAIT_TIMEOUT)
    ids = fake.add_jobs(10)
    with running(worker_for(fake, {"t": lambda job: barrier.wait()}, concurrency=10)):
        fake.wait("10 acks", lambda: len(fake.acked()) == 10)
    assert sorted(fake.tokens[t] for t in fake.acked()) == sorted(ids)
    # All ten finish within microseconds of each other; the 5ms flush window
    # gathers them. Two calls are possible if a thread is descheduled.
    assert len(fake.ack_calls) <= 2, fake.ack_calls


def test_credit_is_the_free_concurrency(fake):
    peak = Peak()

    def handler(job):
        with peak:
            pass

    fake.add_jobs(7)
    with running(worker_for(fake, {"t": handler}, concurrency=2)):
        fake.wait("7 acks", lambda: len(fake.acked()) == 7)
        # Idle again: the broker holds at least half the concurrency, so it
        # could deliver at once; the rest may be owed, never more.
        fake.wait("the broker's credit back to half", lambda: fake.streams[0].credit >= 1)
    (stream,) = fake.streams
    assert stream.open.max_in_flight == 2
    assert stream.open.queues == ["q"]
    assert 6 <= sum(stream.credits) <= 7
    assert peak.peak <= 2


def test_credit_goes_back_in_batches_while_the_broker_holds_half(fake):
    done = threading.Semaphore(0)

    def handler(job):
        done.release()

    with running(worker_for(fake, {"t": handler}, concurrency=10)):
        # One job at a time: the broker's credit drains by one per job.
        for i in range(20):
            fake.add_jobs(1)
            assert done.acquire(timeout=WAIT_TIMEOUT), f"job {i} handled"
        fake.wait("20 acks", lambda: len(fake.acked()) == 20)
    (stream,) = fake.streams
    # Credit goes back when the broker would hold less than 5: every 5 or 6
    # jobs, not after each one.
    assert 3 <= len(stream.credits) <= 4, stream.credits
    assert min(stream.credits) >= 5, stream.credits


def test_takes_no_more_jobs_while_the_acks_it_owes_are_twice_its_slots(fake):
    """Credit followed free slots alone: a worker whose handlers outran its
    acks (a slow or unreachable broker) kept taking jobs, each holding its
    lease and its heartbeats; the TypeScript worker held ~90,000 so. It now
    sends no credit while it holds 2 x concurrency jobs, running or owing
    their ack, and sends it once the acks are answered."""
    fake.lease_seconds = 0.6  # heartbeats every ~200ms: they show what the worker holds
    fake.hold_acks()
    ids = fake.add_jobs(200)
    worker = worker_for(
        fake,
        {"t": lambda job: None},
        concurrency=10,
        ack_batch_size=5,
        ack_flush_interval=0.001,
        rpc_timeout=3 * WAIT_TIMEOUT,  # the held Ack must not time out and be sent again
    )
    with running(worker):
        try:
            fake.wait("an Ack call held at the broker", lambda: fake.acks_held >= 1)
            # Every job it took has run; it then holds back the credit for more.
            held = fake.wait(
                "the worker still, holding twice its slots", lambda: (n := fake.holding_still()) >= 20 and n
            )
            (stream,) = fake.streams
            credit = stream.open.max_in_flight + sum(stream.credits)
        finally:
            fake.release_acks()
        # At most twice its slots, plus the one credit batch sent just below that.
        assert held <= 2 * 10 + 10, held
        assert credit <= 2 * 10 + 10, stream.credits
        fake.wait("every job acked once the acks are answered", lambda: len(fake.acked()) == 200)
    assert sorted(fake.tokens[t] for t in fake.acked()) == sorted(ids)


def test_reconnects_after_drain_and_keeps_owed_acks(fake):
    """The stream breaks while a job runs and Ack fails twice: the worker
    reconnects, the ack is still delivered, and the job delivered on the new
    stream waits for the slot instead of running over the concurrency."""
    release = threading.Event()
    started = threading.Event()
    peak = Peak()

    def handler(job):
        with peak:
            started.set()
            if job.id == "job-1":
                release.wait(WAIT_TIMEOUT)

    fake.add_jobs(1)
    with running(worker_for(fake, {"t": handler}, concurrency=1)) as worker:
        wait_event(started, "job-1 to start")
        fake.fail_acks = 2
        fake.drop_stream(grpc.StatusCode.UNAVAILABLE)
        fake.wait("a second stream", lambda: len(fake.streams) == 2)
        fake.add_jobs(1)
        fake.wait("job-2 delivered on the new stream", lambda: len(fake.streams[1].delivered) == 1)
        release.set()
        fake.wait("both acks", lambda: len(fake.acked()) == 2)
        fake.wait("credit for job-2's slot", lambda: fake.streams[1].credits == [1])
        assert worker.connected.is_set()
    assert sorted(fake.tokens[t] for t in fake.acked()) == ["job-1", "job-2"]
    assert fake.streams[1].open.max_in_flight == 1
    # job-1's freed slot paid back the new stream's extra credit: one credit
    # only, for job-2.
    assert fake.streams[1].credits == [1]
    assert peak.peak == 1


def test_heartbeat_batches_tokens_and_signals_cancel_and_loss(fake):
    fake.lease_seconds = 0.6  # heartbeats every ~200ms
    seen: dict[str, str | None] = {}
    started = threading.Barrier(4, timeout=WAIT_TIMEOUT)
    done = threading.Event()

    def handler(job):
        started.wait()
        if job.id == "job-3":
            done.wait(WAIT_TIMEOUT)
        elif job.cancelled.wait(WAIT_TIMEOUT):
            seen[job.id] = job.cancel_reason
        if job.cancel_reason == "lost":
            raise RuntimeError("gave up")  # must not be nacked: the lease is gone

    fake.add_jobs(3)
    with running(worker_for(fake, {"t": handler}, concurrency=3)):
        started.wait()
        fake.wait("a heartbeat of all three", lambda: any(len(h) == 3 for h in fake.heartbeats))
        by_job = {job_id: token for token, job_id in fake.tokens.items()}
        fake.cancel_tokens.add(by_job["job-1"])
        fake.lost_tokens.add(by_job["job-2"])
        fake.wait("job-1 and job-2 signalled", lambda: len(seen) == 2)
        done.set()
        fake.wait("job-1 and job-3 acked", lambda: len(fake.acked()) == 2)
    assert seen == {"job-1": "cancel_requested", "job-2": "lost"}
    # Returning after CancelJob is an ack: the handler did its work (finding
    # 15 of issue 14; the TypeScript and Go runtimes agree). The lost job's
    # failure is not sent at all.
    assert sorted(fake.tokens[t] for t in fake.acked()) == ["job-1", "job-3"]
    assert fake.nacks == []
    assert all(len(set(h)) == len(h) for h in fake.heartbeats)


def test_stop_half_closes_waits_for_running_jobs_and_flushes_acks(fake):
    started = threading.Event()
    release = threading.Event()

    def handler(job):
        started.set()
        release.wait(WAIT_TIMEOUT)

    fake.add_jobs(1)
    worker = worker_for(fake, {"t": handler})
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_event(started, "the handler to start")
    worker.stop()
    fake.wait("the lease stream half-closed", lambda: fake.streams[0].half_closed)
    assert thread.is_alive(), "run() returned while a job was still running"
    release.set()
    thread.join(WAIT_TIMEOUT)
    assert not thread.is_alive()
    assert len(fake.acked()) == 1  # delivered before run() returned
    assert len(fake.streams) == 1


def test_shutdown_timeout_nacks_unfinished_jobs(fake):
    started = threading.Event()
    release = threading.Event()
    reasons = []

    def handler(job):
        started.set()
        job.cancelled.wait(WAIT_TIMEOUT)
        reasons.append(job.cancel_reason)
        release.wait(WAIT_TIMEOUT)

    fake.add_jobs(1)
    try:
        with running(worker_for(fake, {"t": handler}, shutdown_timeout=0.2)):
            wait_event(started, "the handler to start")
        assert len(fake.nacks) == 1
        nack = fake.nacks[0]
        assert "shut down" in nack.error and not nack.permanent
        assert nack.HasField("retry_after") and nack.retry_after.ToNanoseconds() == 0
        wait_until("the handler to see the shutdown", lambda: reasons)
        assert reasons == ["shutdown"]
        assert fake.acked() == []
    finally:
        release.set()


def test_handler_errors_become_nacks(fake):
    def handler(job):
        if job.payload["n"] == 1:
            raise ValueError("bad n")
        raise jobwire.PermanentError("never")

    fake.add_jobs(2)
    fake.add_jobs(1, job_type="other")
    with running(worker_for(fake, {"t": handler})):
        fake.wait("3 nacks", lambda: len(fake.nacks) == 3)
    by_job = {fake.tokens[n.lease_token]: n for n in fake.nacks}
    assert (by_job["job-1"].error, by_job["job-1"].permanent) == ("ValueError: bad n", False)
    assert (by_job["job-2"].error, by_job["job-2"].permanent) == ("never", True)
    assert by_job["job-3"].permanent and "no handler for job type 'other'" in by_job["job-3"].error


def test_refused_lease_stream_stops_the_worker_with_an_error(fake):
    fake.lease_abort = grpc.StatusCode.INVALID_ARGUMENT
    worker = worker_for(fake, {})
    with pytest.raises(jobwire.JobwireError) as err:
        worker.run()
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_worker_keeps_retrying_an_unreachable_broker_until_stopped():
    # A port nothing listens on: bind one, then close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = jobwire.Worker(f"127.0.0.1:{port}", ["q"], 1, {}, reconnect_backoff=FAST_RECONNECT)
    with running(worker, stop_timeout=10):
        pass  # stop() must end the reconnect loop promptly
    assert not worker.connected.is_set()


def test_client_retries_unavailable_then_succeeds(fake):
    fake.enqueue_failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    with jobwire.Client(fake.address) as client:
        result = client.enqueue("t", {"a": 1}, queue="q")
    assert result == jobwire.EnqueueResult("new-0", False)
    assert fake.enqueue_calls == 3


def test_client_does_not_retry_other_errors(fake):
    fake.enqueue_failures = [grpc.StatusCode.INVALID_ARGUMENT]
    with jobwire.Client(fake.address) as client, pytest.raises(jobwire.JobwireError) as err:
        client.enqueue("t", {}, queue="q")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.enqueue_calls == 1


def test_client_gives_up_within_its_deadline_when_nothing_listens():
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with jobwire.Client(f"127.0.0.1:{port}", timeout=0.5) as client:
        begun = time.monotonic()
        with pytest.raises(jobwire.JobwireError) as err:
            client.get_job("x")
        assert time.monotonic() - begun < 3.0
    assert err.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
