"""An in-process, scriptable stand-in for the broker's WorkerService and
JobService, for testing the runtime's mechanics (credit, batching, reconnects,
failures) in ways a real broker cannot be made to misbehave on cue."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.protobuf import timestamp_pb2

from jobwire.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)


@dataclass
class Stream:
    open: worker_service_pb2.LeaseOpen
    credit: int
    credits: list[int] = field(default_factory=list)
    half_closed: bool = False
    ended: bool = False
    drop: grpc.StatusCode | None = None
    delivered: list[str] = field(default_factory=list)


class FakeBroker(worker_service_pb2_grpc.WorkerServiceServicer, job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, lease_seconds: float = 30.0) -> None:
        self.lease_seconds = lease_seconds
        self.cond = threading.Condition()
        self.pending: list[job_pb2.Job] = []
        self.streams: list[Stream] = []
        self.tokens: dict[str, str] = {}  # token -> job id
        self.ack_calls: list[list[str]] = []
        self.nacks: list[worker_service_pb2.NackRequest] = []
        self.heartbeats: list[list[str]] = []
        self.lost_tokens: set[str] = set()
        self.cancel_tokens: set[str] = set()
        self.fail_acks = 0  # answer UNAVAILABLE to this many Ack calls
        # While set (hold_acks), Ack calls wait unanswered until release_acks;
        # acks_held counts the calls that have waited.
        self.ack_gate: threading.Event | None = None
        self.acks_held = 0
        self.lease_abort: grpc.StatusCode | None = None  # refuse Lease at once
        self.enqueue_failures: list[grpc.StatusCode] = []
        self.enqueue_calls = 0
        # When set: each Enqueue announces itself on enqueue_arrived, then
        # waits for enqueue_gate before answering.
        self.enqueue_gate: threading.Event | None = None
        self.enqueue_arrived = threading.Event()
        self._jobs_n = 0
        self._tokens_n = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(self, self.server)
        job_service_pb2_grpc.add_JobServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> "FakeBroker":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=0).wait()

    # -- scripting --------------------------------------------------------------

    def add_jobs(self, n: int, job_type: str = "t", queue: str = "q") -> list[str]:
        with self.cond:
            ids = []
            for _ in range(n):
                self._jobs_n += 1
                job = job_pb2.Job(
                    id=f"job-{self._jobs_n}",
                    queue=queue,
                    type=job_type,
                    payload=b'{"n":%d}' % self._jobs_n,
                    content_type="application/json",
                    attempt=1,
                    max_attempts=25,
                )
                self.pending.append(job)
                ids.append(job.id)
            self.cond.notify_all()
            return ids

    def drop_stream(self, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        with self.cond:
            self.streams[-1].drop = code
            self.cond.notify_all()

    def wait(self, what: str, predicate, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (value := predicate()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake broker: timed out waiting for {what}")
                self.cond.wait(min(left, 0.05))
            return value

    def hold_acks(self) -> None:
        """Ack calls from now on wait, unanswered, until release_acks: a slow
        or unreachable broker, as the worker sees it."""
        with self.cond:
            self.ack_gate = threading.Event()

    def release_acks(self) -> None:
        with self.cond:
            gate, self.ack_gate = self.ack_gate, None
        if gate is not None:
            gate.set()

    def holding_still(self) -> int:
        """How many jobs the worker holds once it has stopped taking more, or
        0 while it may still be taking them: the last two Heartbeat calls
        carried the same tokens, and those are every job it was sent. (A
        Heartbeat carries every token the worker holds; with acks held, it
        holds every token it was sent.)"""
        with self.cond:
            if len(self.heartbeats) < 2 or not self.streams:
                return 0
            last, before = set(self.heartbeats[-1]), set(self.heartbeats[-2])
            sent = {token for stream in self.streams for token in stream.delivered}
            return len(last) if last == before == sent else 0

    def acked(self) -> list[str]:
        with self.cond:
            return [token for call in self.ack_calls for token in call]

    # -- WorkerService ------------------------------------------------------------

    def Lease(self, request_iterator, context):
        first = next(request_iterator)
        if self.lease_abort is not None:
            context.abort(self.lease_abort, "refused by the fake")
        stream = Stream(open=first.open, credit=first.open.max_in_flight)
        with self.cond:
            self.streams.append(stream)
            self.cond.notify_all()

        def read() -> None:
            try:
                for request in request_iterator:
                    with self.cond:
                        stream.credits.append(request.credit.count)
                        stream.credit = min(stream.open.max_in_flight, stream.credit + request.credit.count)
                        self.cond.notify_all()
            except Exception:  # noqa: BLE001 - the call ended
                pass
            with self.cond:
                stream.half_closed = True
                self.cond.notify_all()

        threading.Thread(target=read, daemon=True).start()
        try:
            while True:
                with self.cond:
                    while not (
                        stream.drop or stream.half_closed or (stream.credit > 0 and self.pending) or not context.is_active()
                    ):
                        self.cond.wait(0.05)
                    if stream.drop:
                        code = stream.drop
                        break
                    if stream.half_closed or not context.is_active():
                        return
                    batch = []
                    while stream.credit > 0 and self.pending:
                        job = self.pending.pop(0)
                        stream.credit -= 1
                        self._tokens_n += 1
                        token = f"tok-{self._tokens_n}"
                        self.tokens[token] = job.id
                        stream.delivered.append(token)
                        expires = timestamp_pb2.Timestamp()
                        expires.FromNanoseconds(int((time.time() + self.lease_seconds) * 1e9))
                        batch.append(worker_service_pb2.LeasedJob(job=job, lease_token=token, lease_expires_at=expires))
                yield worker_service_pb2.LeaseResponse(jobs=batch)
            context.abort(code, "the fake broker is draining")
        finally:
            with self.cond:
                stream.ended = True
                self.cond.notify_all()

    def Ack(self, request, context):
        with self.cond:
            gate = self.ack_gate
            if gate is not None:
                self.acks_held += 1
                self.cond.notify_all()
        if gate is not None:
            gate.wait(60)
            if not context.is_active():
                return worker_service_pb2.AckResponse()  # the worker gave up on this call: not applied
        with self.cond:
            if self.fail_acks > 0:
                self.fail_acks -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "fake: try again")
            self.ack_calls.append(list(request.lease_tokens))
            self.cond.notify_all()
            lost = [t for t in request.lease_tokens if t in self.lost_tokens]
        return worker_service_pb2.AckResponse(lost_lease_tokens=lost)

    def Nack(self, request, context):
        with self.cond:
            self.nacks.append(request)
            self.cond.notify_all()
            if request.lease_token in self.lost_tokens:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "stale lease")
        return worker_service_pb2.NackResponse(state=job_pb2.JOB_STATE_RETRYABLE)

    def Heartbeat(self, request, context):
        with self.cond:
            self.heartbeats.append(list(request.lease_tokens))
            self.cond.notify_all()
            results = []
            for token in request.lease_tokens:
                expires = timestamp_pb2.Timestamp()
                expires.FromNanoseconds(int((time.time() + self.lease_seconds) * 1e9))
                lost = token in self.lost_tokens
                results.append(
                    worker_service_pb2.HeartbeatResult(
                        lease_token=token,
                        lease_expires_at=None if lost else expires,
                        lost=lost,
                        cancel_requested=token in self.cancel_tokens,
                    )
                )
        return worker_service_pb2.HeartbeatResponse(results=results)

    # -- JobService -----------------------------------------------------------------

    def Enqueue(self, request, context):
        gate = self.enqueue_gate
        if gate is not None:
            self.enqueue_arrived.set()
            gate.wait(30)
        with self.cond:
            self.enqueue_calls += 1
            if self.enqueue_failures:
                context.abort(self.enqueue_failures.pop(0), "fake failure")
        return job_service_pb2.EnqueueResponse(
            results=[job_service_pb2.EnqueueResult(job_id=f"new-{i}") for i, _ in enumerate(request.jobs)]
        )
