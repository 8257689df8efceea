"""Worker: leases jobs over one stream and runs them on a pool of threads.

Why threads: handlers are plain functions, and most of them block (HTTP
calls, database drivers, subprocesses). A pool of ``concurrency`` threads runs
them as they are, and the gRPC sync API keeps the runtime's own work (the
Lease stream, heartbeats, acks) on a few more threads beside them. A handler
that wants asyncio can run its own loop with ``asyncio.run``.

The threads, and what each owns:

    lease       one Lease stream at a time: opens it, turns each LeasedJob into
                a held lease and puts it on the work queue, reconnects with
                jittered backoff when the stream breaks or the broker drains.
    handler×N   take held leases off the work queue and run their handlers;
                the outcome goes to the outbox, the freed slot becomes credit.
    heartbeat   one Heartbeat call for every held token, due when the earliest
                lease has a third of its time gone.
    outbox      acks batched within ack_flush_interval into one Ack call, and
                nacks; both retried on transient errors until delivered, so a
                broken stream or a restarting broker loses none of them.

What must stay true:
  * Jobs delivered but not finished (``_busy``) plus the credit the current
    stream holds (``_broker_credit``) plus the credit owed to it and not yet
    sent (``_owed``) equals ``concurrency`` once the stream has settled.
    Owed credit is sent only once the broker holds less than half of
    ``concurrency``: above that it can fill every slot it knows is free, and
    a credit message per finished job costs both ends CPU at low rates. A new
    stream opens with max_in_flight = concurrency, which grants that much
    credit again while jobs from the old stream may still be running; the
    overlap is recorded in ``_excess`` and paid back by sending no credit for
    that many freed slots. Until then at most that many delivered jobs wait
    on the work queue for a thread, and are heartbeated while they wait.
  * A token stays in ``_held`` (and so is heartbeated) until its ack or nack
    has been delivered, or its lease is known to be lost.
  * ``stop()`` only sets a flag: it runs inside signal handlers, where taking
    a lock that the interrupted main thread may hold would deadlock.
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import os
import queue
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import grpc
from opentelemetry import trace

from . import _payload, _tracing
from ._backoff import Backoff
from ._convert import DurationLike, duration_seconds, timestamp_seconds, to_duration
from ._rpc import ChannelOptions, check_token, make_channel, with_token
from .errors import JobwireError, PermanentError
from .v1 import job_pb2, worker_service_pb2, worker_service_pb2_grpc

log = logging.getLogger("jobwire.worker")

Handler = Callable[["Job"], Any]

# Handler threads, and so the most jobs this worker runs at once.
DEFAULT_CONCURRENCY = 10
# How long shutdown waits for running handlers before giving up on them.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
# How long a finished job's ack may wait for others to share its Ack call.
# 20ms delays no job's start (a slot frees when the handler returns) and,
# under load, turns hundreds of calls a second into a few dozen; each call
# costs both ends a whole RPC.
DEFAULT_ACK_FLUSH_INTERVAL = 0.02
# The most tokens in one Ack call.
DEFAULT_ACK_BATCH_SIZE = 500
# Deadline of each Ack, Nack and Heartbeat call.
DEFAULT_RPC_TIMEOUT = 5.0
# Delays before reopening a broken Lease stream: 100ms doubling to 10s, jittered.
DEFAULT_RECONNECT_BACKOFF = Backoff(initial=0.1, maximum=10.0)
# Delays before retrying a failed Ack, Nack or Heartbeat: 50ms doubling to 1s.
# Short, because leases are ticking while they fail.
DEFAULT_DELIVERY_BACKOFF = Backoff(initial=0.05, maximum=1.0)
# Heartbeat when this share of a lease has passed: a 30s lease is extended
# every 10s, leaving two more tries before it expires.
HEARTBEAT_FRACTION = 1 / 3
# The shortest wait between heartbeats, however short the lease.
MIN_HEARTBEAT_INTERVAL = 0.05
# The shortest deadline a Heartbeat call gets, however close its leases are
# to expiring.
MIN_HEARTBEAT_TIMEOUT = 0.2
# How long, after half-closing the Lease stream at shutdown, the broker has to
# end it before the worker cancels the call.
HALF_CLOSE_GRACE = 5.0
# How long shutdown keeps trying to deliver owed acks and nacks once the
# handlers are done (or given up on).
FLUSH_TIMEOUT = 10.0
# How often run() looks at the stop flag that signal handlers set.
SUPERVISOR_POLL = 0.05
# The broker keeps at most 64 KiB of a nack's error message.
MAX_ERROR_BYTES = 64 * 1024

# Lease stream statuses that reconnecting cannot fix: run() stops and raises.
FATAL_STREAM_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
# Ack, Nack and Heartbeat statuses worth retrying: the call did not get
# through, or the broker asked for patience. Anything else is its answer.
RETRYABLE_DELIVERY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

# Why a job's cancellation event was set.
CANCEL_REQUESTED = "cancel_requested"  # CancelJob was called
CANCEL_LOST = "lost"  # the lease expired or was taken over
CANCEL_SHUTDOWN = "shutdown"  # the worker stopped before the handler finished


class Job:
    """One attempt at a job, as a handler sees it.

    ``payload`` is the decoded JSON when the content type is JSON, else the
    raw bytes (always in ``raw_payload``). ``cancelled`` is set when the
    handler should stop: CancelJob was called, the lease was lost, or the
    worker gave up waiting at shutdown; ``cancel_reason`` says which.

    When the handler returns: normally, the job is acked (COMPLETED); if it
    raised, nacked for a retry (or to DEAD for a PermanentError). After a
    CancelJob, returning is taken as stopping on request and the job is
    nacked, which the broker turns into CANCELLED; after a lost lease nothing
    is sent, since another attempt owns the job.
    """

    __slots__ = (
        "id",
        "type",
        "queue",
        "attempt",
        "max_attempts",
        "payload",
        "raw_payload",
        "content_type",
        "headers",
        "cancelled",
        "proto",
        "_lease",
    )

    def __init__(self, lease: "_Lease", payload: Any) -> None:
        job = lease.leased.job
        self.id: str = job.id
        self.type: str = job.type
        self.queue: str = job.queue
        self.attempt: int = job.attempt
        self.max_attempts: int = job.max_attempts
        self.payload: Any = payload
        self.raw_payload: bytes = job.payload
        self.content_type: str = job.content_type
        self.headers: dict[str, str] = dict(job.headers)
        self.cancelled: threading.Event = lease.cancelled
        self.proto: job_pb2.Job = job
        self._lease = lease

    @property
    def cancel_reason(self) -> str | None:
        """None, "cancel_requested", "lost" or "shutdown"."""
        return self._lease.cancel_reason

    @property
    def lease_expires_at(self) -> _dt.datetime:
        """When the lease runs out unless heartbeated (the worker does that)."""
        return _dt.datetime.fromtimestamp(self._lease.expires_at, _dt.timezone.utc)

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, type={self.type!r}, queue={self.queue!r}, attempt={self.attempt})"


@dataclass(eq=False)
class _Lease:
    """A held lease token and what the runtime knows about it."""

    token: str
    leased: worker_service_pb2.LeasedJob
    expires_at: float  # wall clock, seconds since the epoch
    next_heartbeat: float  # monotonic
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    finished: bool = False  # the handler is done and its slot freed
    lost: bool = False  # the broker said the lease is gone: send nothing more
    abandoned: bool = False  # shutdown gave up on it and nacked it

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancelled.set()


class Worker:
    """Runs handlers for jobs leased from one or more queues.

        worker = Worker("localhost:50051", ["mail"], concurrency=8,
                        handlers={"send_welcome": send_welcome})
        worker.run()

    ``run()`` blocks until SIGTERM or SIGINT (when called on the main thread)
    or ``stop()``; then it stops taking jobs, lets running ones finish for up
    to ``shutdown_timeout`` seconds, delivers owed acks and returns. A second
    signal stops waiting for handlers at once.

    ``token`` is sent as ``authorization: Bearer <token>`` on the Lease stream
    and on every Ack, Nack and Heartbeat, for a broker started with
    JOBWIRE_AUTH_TOKENS; like Client's, it applies to a ``channel`` passed in
    too. A refused token stops ``run()`` with JobwireError(UNAUTHENTICATED).
    """

    def __init__(
        self,
        address: str,
        queues: Sequence[str] | str,
        concurrency: int = DEFAULT_CONCURRENCY,
        handlers: Mapping[str, Handler] | None = None,
        *,
        worker_id: str | None = None,
        lease_duration: DurationLike | None = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        install_signal_handlers: bool = True,
        ack_flush_interval: float = DEFAULT_ACK_FLUSH_INTERVAL,
        ack_batch_size: int = DEFAULT_ACK_BATCH_SIZE,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
        reconnect_backoff: Backoff = DEFAULT_RECONNECT_BACKOFF,
        channel: grpc.Channel | None = None,
        channel_options: ChannelOptions | None = None,
        token: str | None = None,
    ) -> None:
        if isinstance(queues, str):
            queues = [queues]
        if not queues or not all(isinstance(q, str) and q for q in queues):
            raise ValueError("queues must be one or more non-empty queue names")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        if shutdown_timeout < 0 or ack_flush_interval < 0 or rpc_timeout <= 0 or ack_batch_size < 1:
            raise ValueError("shutdown_timeout and ack_flush_interval must be >= 0, rpc_timeout and ack_batch_size > 0")
        if token is not None:
            check_token(token)
        self.address = address
        self.queues = list(queues)
        self.concurrency = concurrency
        self.worker_id = (worker_id or _default_worker_id())[:255]
        self.shutdown_timeout = shutdown_timeout
        self._lease_duration = to_duration(lease_duration) if lease_duration is not None else None
        self._install_signal_handlers = install_signal_handlers
        self._ack_flush_interval = ack_flush_interval
        self._ack_batch_size = ack_batch_size
        self._rpc_timeout = rpc_timeout
        self._reconnect_backoff = reconnect_backoff
        self._delivery_backoff = DEFAULT_DELIVERY_BACKOFF
        self._handlers: dict[str, Handler] = {}
        for job_type, fn in (handlers or {}).items():
            self.register(job_type, fn)

        self._own_channel = channel is None
        self._channel = channel if channel is not None else make_channel(address, channel_options)
        if token is not None:
            self._channel = with_token(self._channel, token)
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(self._channel)

        # Set by stop() and signal handlers: a plain attribute, see the module doc.
        self._stop_flag = False
        self._force_flag = False
        self._stop_wakeup = threading.Event()
        # Set once run() has begun shutting down; the lease thread's waits end on it.
        self._stopping = threading.Event()
        self._started = False
        self._fatal: BaseException | None = None
        #: Set once the first Lease stream has answered; handy for tests and readiness probes.
        self.connected = threading.Event()

        self._lock = threading.Lock()
        self._slots_changed = threading.Condition(self._lock)
        self._heartbeat_wakeup = threading.Condition(self._lock)
        self._outbox_wakeup = threading.Condition(self._lock)
        self._held: dict[str, _Lease] = {}
        self._busy = 0
        self._excess = 0
        self._broker_credit = 0
        self._owed = 0
        self._requests: queue.SimpleQueue | None = None
        self._call: Any = None
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._acks: list[str] = []
        self._first_ack_at = 0.0
        self._nacks: collections.deque[worker_service_pb2.NackRequest] = collections.deque()
        self._outbox_closing = False
        self._outbox_deadline = 0.0
        self._heartbeat_stop = False

    # -- public API -----------------------------------------------------------

    def register(self, job_type: str, fn: Handler) -> None:
        """Adds a handler for a job type (before run())."""
        if not job_type:
            raise ValueError("job type must not be empty")
        if not callable(fn):
            raise TypeError(f"handler for {job_type!r} is not callable")
        self._handlers[job_type] = fn

    def handler(self, job_type: str) -> Callable[[Handler], Handler]:
        """Decorator form of register()."""

        def wrap(fn: Handler) -> Handler:
            self.register(job_type, fn)
            return fn

        return wrap

    def stop(self) -> None:
        """Asks run() to shut down gracefully, as SIGTERM does. Returns at once;
        safe from any thread and from signal handlers."""
        self._stop_flag = True
        self._stop_wakeup.set()

    def run(self) -> None:
        """Takes and runs jobs until stopped; see the class doc."""
        if self._started:
            raise RuntimeError("a Worker runs once; make a new one")
        self._started = True
        restore = self._install_signals()
        threads = [
            threading.Thread(target=self._guard(self._heartbeat_loop), name="jobwire-heartbeat", daemon=True),
            threading.Thread(target=self._guard(self._outbox_loop), name="jobwire-outbox", daemon=True),
        ]
        threads += [
            threading.Thread(target=self._guard(self._handler_loop), name=f"jobwire-handler-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        lease_thread = threading.Thread(target=self._guard(self._lease_loop), name="jobwire-lease", daemon=True)
        log.info(
            "worker %s starting: queues=%s concurrency=%d handlers=%s",
            self.worker_id,
            ",".join(self.queues),
            self.concurrency,
            ",".join(sorted(self._handlers)) or "(none)",
        )
        try:
            for t in threads:
                t.start()
            lease_thread.start()
            while not self._stop_flag:
                self._stop_wakeup.wait(SUPERVISOR_POLL)
            self._shutdown(lease_thread, threads)
        finally:
            restore()
            if self._own_channel:
                self._channel.close()
        if self._fatal is not None:
            raise self._fatal

    # -- signals ----------------------------------------------------------------

    def _install_signals(self) -> Callable[[], None]:
        if not self._install_signal_handlers or threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, _frame: Any) -> None:
            # Flags only: see the module doc.
            if self._stop_flag:
                self._force_flag = True
            self._stop_flag = True

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    # -- the Lease stream ---------------------------------------------------------

    def _lease_loop(self) -> None:
        attempt = 0
        while True:
            requests: queue.SimpleQueue = queue.SimpleQueue()
            with self._lock:
                if self._stopping.is_set():
                    return
                # The new stream grants `concurrency` credit on top of the
                # slots still busy with earlier streams' jobs.
                self._excess = self._busy
                self._broker_credit = self.concurrency
                self._owed = 0
                self._requests = requests
            opening = worker_service_pb2.LeaseRequest(
                open=worker_service_pb2.LeaseOpen(
                    queues=self.queues,
                    worker_id=self.worker_id,
                    max_in_flight=self.concurrency,
                    lease_duration=self._lease_duration,
                )
            )
            call = self._stub.Lease(_request_stream(opening, requests))
            self._call = call
            broke: grpc.RpcError | None = None
            try:
                for response in call:
                    if attempt or not self.connected.is_set():
                        log.info("worker %s: lease stream open", self.worker_id)
                    attempt = 0
                    self.connected.set()
                    for leased in response.jobs:
                        self._accept(leased)
                    if response.jobs:
                        with self._lock:
                            self._broker_credit -= len(response.jobs)
                            self._flush_credit_locked()
            except grpc.RpcError as err:
                broke = err
            finally:
                with self._lock:
                    self._requests = None
                requests.put(None)  # ends the request iterator if it still runs

            if self._stopping.is_set():
                return
            if broke is None:
                # The broker ends streams itself only when it drains.
                log.info("worker %s: broker ended the lease stream; reconnecting", self.worker_id)
            elif broke.code() in FATAL_STREAM_CODES:
                self._fatal = JobwireError.from_rpc_error(broke, "Lease")
                log.error("worker %s: lease stream refused, stopping: %s", self.worker_id, self._fatal)
                self.stop()
                return
            else:
                # Loud once per outage, quiet while the broker stays away.
                log.log(
                    logging.WARNING if attempt == 0 else logging.DEBUG,
                    "worker %s: lease stream broke (%s: %s); reconnecting",
                    self.worker_id,
                    broke.code().name,
                    broke.details(),
                )
            pause = self._reconnect_backoff.delay(attempt)
            attempt += 1
            if self._stopping.wait(pause):
                return

    def _accept(self, leased: worker_service_pb2.LeasedJob) -> None:
        now_wall, now = time.time(), time.monotonic()
        expires_at = _expiry(leased, now_wall, self._lease_duration)
        lease = _Lease(
            token=leased.lease_token,
            leased=leased,
            expires_at=expires_at,
            next_heartbeat=now + max(MIN_HEARTBEAT_INTERVAL, (expires_at - now_wall) * HEARTBEAT_FRACTION),
        )
        with self._lock:
            if lease.token in self._held:
                log.warning("worker %s: lease token delivered twice, ignored: job %s", self.worker_id, leased.job.id)
                return
            self._held[lease.token] = lease
            self._busy += 1
            self._heartbeat_wakeup.notify()
        self._work.put(lease)

    # -- running handlers -------------------------------------------------------------

    def _handler_loop(self) -> None:
        while True:
            lease = self._work.get()
            if lease is None:
                return
            self._run_one(lease)

    def _run_one(self, lease: _Lease) -> None:
        try:
            with self._lock:
                skip = lease.lost or lease.abandoned
            if not skip:
                self._execute(lease)
        finally:
            self._free_slot(lease)

    def _execute(self, lease: _Lease) -> None:
        job = lease.leased.job
        span = _tracing.tracer().start_span(
            f"process {job.queue}",
            context=_tracing.extract(job.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                _tracing.MESSAGING_SYSTEM: _tracing.SYSTEM,
                _tracing.MESSAGING_DESTINATION: job.queue,
                _tracing.MESSAGING_MESSAGE_ID: job.id,
                _tracing.MESSAGING_OPERATION_TYPE: "process",
                _tracing.MESSAGING_OPERATION_NAME: "process",
                _tracing.JOB_TYPE: job.type,
                _tracing.JOB_ATTEMPT: job.attempt,
            },
        )
        failure: BaseException | None = None
        permanent = False
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                handler = self._handlers.get(job.type)
                if handler is None:
                    known = ", ".join(sorted(self._handlers)) or "none"
                    raise PermanentError(
                        f"no handler for job type {job.type!r} on worker {self.worker_id} (it handles: {known})"
                    )
                handler(Job(lease, _payload.decode(job.payload, job.content_type)))
            except PermanentError as err:
                failure, permanent = err, True
            except BaseException as err:  # noqa: BLE001 - a handler's failure is the job's, never the worker's
                failure = err

            with self._lock:
                lost, abandoned = lease.lost, lease.abandoned
                # CancelJob was called and the handler has returned: it
                # stopped because it was asked to. A nack lets the broker
                # finish the job as CANCELLED; an ack would make it COMPLETED.
                cancelled = failure is None and lease.cancel_reason == CANCEL_REQUESTED
                if not lost and not abandoned:
                    if cancelled:
                        self._queue_nack(
                            worker_service_pb2.NackRequest(
                                lease_token=lease.token,
                                error=f"cancelled: the handler returned after CancelJob on worker {self.worker_id}",
                            )
                        )
                    elif failure is None:
                        self._queue_ack(lease.token)
                    else:
                        self._queue_nack(
                            worker_service_pb2.NackRequest(
                                lease_token=lease.token,
                                error=_error_message(failure, permanent),
                                permanent=permanent,
                            )
                        )

            if lost:
                outcome = _tracing.OUTCOME_LOST
            elif abandoned:
                outcome = _tracing.OUTCOME_ABANDONED
            elif cancelled:
                outcome = _tracing.OUTCOME_CANCELLED
            elif failure is None:
                outcome = _tracing.OUTCOME_COMPLETED
            else:
                outcome = _tracing.OUTCOME_FAILED_PERMANENT if permanent else _tracing.OUTCOME_FAILED
            span.set_attribute(_tracing.JOB_OUTCOME, outcome)
            if failure is not None:
                span.record_exception(failure)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(failure) or type(failure).__name__))
            if failure is not None and not lost:
                log.log(
                    logging.WARNING if permanent else logging.INFO,
                    "job %s (%s) attempt %d failed%s: %s",
                    job.id,
                    job.type,
                    job.attempt,
                    " permanently" if permanent else "",
                    _error_message(failure, permanent),
                )
            elif lost:
                log.warning("job %s (%s): lease lost while running; its result is dropped", job.id, job.type)

    def _free_slot(self, lease: _Lease) -> None:
        with self._lock:
            lease.finished = True
            self._busy -= 1
            if lease.lost:
                # Nothing is owed for a lost lease. (An abandoned one's nack is
                # queued, and it is unheld once that is delivered.)
                self._held.pop(lease.token, None)
            if self._excess > 0:
                self._excess -= 1
            else:
                self._owed += 1
                self._flush_credit_locked()
            self._slots_changed.notify_all()

    def _flush_credit_locked(self) -> None:
        """Sends the owed credit once the broker holds less than half of the
        concurrency (see the module docstring). Caller holds self._lock."""
        if (
            self._owed == 0
            or self._broker_credit * 2 >= self.concurrency
            or self._requests is None
            or self._stopping.is_set()
        ):
            return
        self._requests.put(worker_service_pb2.LeaseRequest(credit=worker_service_pb2.LeaseCredit(count=self._owed)))
        self._broker_credit += self._owed
        self._owed = 0

    # -- the outbox: acks and nacks -------------------------------------------------

    def _queue_ack(self, token: str) -> None:
        # Caller holds self._lock.
        if not self._acks:
            self._first_ack_at = time.monotonic()
        self._acks.append(token)
        self._outbox_wakeup.notify()

    def _queue_nack(self, request: worker_service_pb2.NackRequest) -> None:
        # Caller holds self._lock.
        self._nacks.append(request)
        self._outbox_wakeup.notify()

    def _outbox_loop(self) -> None:
        failures = 0
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    if self._outbox_closing and (now >= self._outbox_deadline or not (self._acks or self._nacks)):
                        if self._acks or self._nacks:
                            log.error(
                                "worker %s: gave up delivering %d acks and %d nacks at shutdown",
                                self.worker_id,
                                len(self._acks),
                                len(self._nacks),
                            )
                        return
                    if self._nacks:
                        break
                    if self._acks:
                        flush_at = self._first_ack_at + self._ack_flush_interval
                        if self._outbox_closing or len(self._acks) >= self._ack_batch_size or now >= flush_at:
                            break
                        self._outbox_wakeup.wait(flush_at - now)
                    else:
                        self._outbox_wakeup.wait()
                acks = self._acks[: self._ack_batch_size]
                del self._acks[: len(acks)]
                if self._acks:
                    self._first_ack_at = time.monotonic()
                nack = self._nacks.popleft() if self._nacks else None

            ok = True
            if acks:
                ok = self._deliver_acks(acks)
            if nack is not None:
                ok = self._deliver_nack(nack) and ok
            if ok:
                failures = 0
                continue
            pause = self._delivery_backoff.delay(failures)
            failures += 1
            with self._lock:
                if not self._outbox_closing or time.monotonic() + pause < self._outbox_deadline:
                    self._outbox_wakeup.wait(pause)

    def _deliver_acks(self, tokens: list[str]) -> bool:
        """Sends one Ack; on a transient failure puts the tokens back first in line."""
        try:
            response = self._stub.Ack(worker_service_pb2.AckRequest(lease_tokens=tokens), timeout=self._rpc_timeout)
        except grpc.RpcError as err:
            if err.code() in RETRYABLE_DELIVERY_CODES:
                log.warning("worker %s: Ack of %d tokens failed (%s); retrying", self.worker_id, len(tokens), err.code().name)
                with self._lock:
                    if not self._acks:
                        self._first_ack_at = time.monotonic()
                    self._acks[:0] = tokens
                return False
            log.error(
                "worker %s: Ack refused (%s: %s); dropping %d tokens",
                self.worker_id,
                err.code().name,
                err.details(),
                len(tokens),
            )
            lost: Sequence[str] = ()
        else:
            lost = response.lost_lease_tokens
        with self._lock:
            for token in tokens:
                self._held.pop(token, None)
        for token in lost:
            log.warning("worker %s: ack came too late, the lease was lost (token %s)", self.worker_id, token)
        return True

    def _deliver_nack(self, request: worker_service_pb2.NackRequest) -> bool:
        try:
            self._stub.Nack(request, timeout=self._rpc_timeout)
        except grpc.RpcError as err:
            code = err.code()
            if code in RETRYABLE_DELIVERY_CODES:
                log.warning("worker %s: Nack failed (%s); retrying", self.worker_id, code.name)
                with self._lock:
                    self._nacks.appendleft(request)
                return False
            if code is grpc.StatusCode.FAILED_PRECONDITION:
                log.warning("worker %s: nack came too late, the lease was lost: %s", self.worker_id, err.details())
            else:
                log.error("worker %s: Nack refused (%s: %s); dropped", self.worker_id, code.name, err.details())
        with self._lock:
            self._held.pop(request.lease_token, None)
        return True

    # -- heartbeats -------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        failures = 0
        while True:
            with self._lock:
                while True:
                    if self._heartbeat_stop:
                        return
                    live = [lease for lease in self._held.values() if not lease.lost]
                    if live:
                        wait = min(lease.next_heartbeat for lease in live) - time.monotonic()
                        if wait <= 0:
                            break
                        self._heartbeat_wakeup.wait(wait)
                    else:
                        self._heartbeat_wakeup.wait()
                tokens = [lease.token for lease in live]
                # A heartbeat that answers after the shortest lease has run
                # out is no use: give up on it then, and try again.
                shortest = min(lease.expires_at for lease in live) - time.time()
            timeout = max(MIN_HEARTBEAT_TIMEOUT, min(self._rpc_timeout, shortest))
            try:
                response = self._stub.Heartbeat(worker_service_pb2.HeartbeatRequest(lease_tokens=tokens), timeout=timeout)
            except grpc.RpcError as err:
                pause = self._delivery_backoff.delay(failures)
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "worker %s: Heartbeat of %d leases failed (%s: %s); retrying in %.2fs",
                    self.worker_id,
                    len(tokens),
                    err.code().name,
                    err.details(),
                    pause,
                )
                retry_at = time.monotonic() + pause
                with self._lock:
                    for lease in live:
                        lease.next_heartbeat = retry_at
                continue
            failures = 0
            self._apply_heartbeat(tokens, response)

    def _apply_heartbeat(self, tokens: list[str], response: worker_service_pb2.HeartbeatResponse) -> None:
        now_wall, now = time.time(), time.monotonic()
        with self._lock:
            for i, result in enumerate(response.results):
                token = result.lease_token or (tokens[i] if i < len(tokens) else "")
                lease = self._held.get(token)
                if lease is None:
                    continue
                if result.lost:
                    lease.lost = True
                    lease.cancel(CANCEL_LOST)
                    if lease.finished:
                        # Its ack or nack may still be queued; the broker will
                        # refuse it, so stop heartbeating it now.
                        self._held.pop(token, None)
                    log.warning("job %s: lease lost", lease.leased.job.id)
                    continue
                if result.HasField("lease_expires_at"):
                    lease.expires_at = timestamp_seconds(result.lease_expires_at)
                remaining = lease.expires_at - now_wall
                lease.next_heartbeat = now + max(MIN_HEARTBEAT_INTERVAL, remaining * HEARTBEAT_FRACTION)
                if result.cancel_requested and not lease.cancelled.is_set():
                    log.info("job %s: cancellation requested", lease.leased.job.id)
                    lease.cancel(CANCEL_REQUESTED)

    # -- shutdown ---------------------------------------------------------------------

    def _shutdown(self, lease_thread: threading.Thread, threads: list[threading.Thread]) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        log.info("worker %s: stopping; no new jobs, waiting for running ones", self.worker_id)
        # 1. Stop taking jobs: half-close the Lease request stream. The broker
        #    then sends nothing more and ends the stream.
        with self._lock:
            self._stopping.set()
            requests = self._requests
        if requests is not None:
            requests.put(None)
        lease_thread.join(HALF_CLOSE_GRACE)
        if lease_thread.is_alive():
            log.warning("worker %s: broker did not end the lease stream after half-close; cancelling it", self.worker_id)
            call = self._call
            if call is not None:
                call.cancel()
            lease_thread.join()

        # 2. Let running (and already delivered) jobs finish, up to the deadline.
        with self._lock:
            while self._busy > 0 and not self._force_flag:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._slots_changed.wait(min(left, SUPERVISOR_POLL))
            unfinished = [lease for lease in self._held.values() if not lease.finished and not lease.lost]
            for lease in unfinished:
                lease.abandoned = True
                lease.cancel(CANCEL_SHUTDOWN)
                retry_now = worker_service_pb2.NackRequest(
                    lease_token=lease.token,
                    error=f"worker {self.worker_id} shut down before the handler finished",
                    retry_after=to_duration(0),
                )
                self._queue_nack(retry_now)
        if unfinished:
            log.warning("worker %s: gave up on %d running jobs; nacked them for a retry", self.worker_id, len(unfinished))
        for _ in range(self.concurrency):
            self._work.put(None)

        # 3. Deliver what is owed, then stop the helpers.
        with self._lock:
            self._outbox_closing = True
            self._outbox_deadline = time.monotonic() + FLUSH_TIMEOUT
            self._outbox_wakeup.notify_all()
        outbox = next(t for t in threads if t.name == "jobwire-outbox")
        outbox.join(FLUSH_TIMEOUT + self._rpc_timeout)
        with self._lock:
            self._heartbeat_stop = True
            self._heartbeat_wakeup.notify_all()
        for t in threads:
            if t.name == "jobwire-heartbeat":
                t.join(self._rpc_timeout + 1)
        log.info("worker %s: stopped", self.worker_id)

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        """Runs a runtime thread; a bug in it stops the worker rather than
        leaving it half alive."""

        def run() -> None:
            try:
                fn()
            except BaseException as err:  # noqa: BLE001
                log.exception("worker %s: internal error in %s", self.worker_id, threading.current_thread().name)
                if self._fatal is None:
                    self._fatal = err
                self.stop()

        return run


def _request_stream(opening: worker_service_pb2.LeaseRequest, requests: queue.SimpleQueue) -> Iterator[Any]:
    """The Lease request stream: open, then credits, until None half-closes it."""
    yield opening
    while True:
        item = requests.get()
        if item is None:
            return
        yield item


def _expiry(leased: worker_service_pb2.LeasedJob, now_wall: float, worker_lease: Any) -> float:
    """When a freshly leased job's lease runs out, on the local wall clock.

    The broker's lease_expires_at is trusted unless it lies further out than
    the lease's own duration would allow from now, which guards against a
    broker clock running ahead of ours: heartbeating early is harmless,
    heartbeating late loses the job.
    """
    own = leased.job.lease_duration if leased.job.HasField("lease_duration") else None
    duration = own if own is not None else worker_lease
    bound = now_wall + duration_seconds(duration) if duration is not None else None
    if leased.HasField("lease_expires_at"):
        at = timestamp_seconds(leased.lease_expires_at)
        return min(at, bound) if bound is not None else at
    if bound is not None:
        return bound
    return now_wall + 30.0  # the broker's documented default lease


def _error_message(err: BaseException, permanent: bool) -> str:
    text = str(err)
    message = text if permanent and text else (f"{type(err).__name__}: {text}" if text else type(err).__name__)
    data = message.encode("utf-8")
    if len(data) > MAX_ERROR_BYTES:
        message = data[: MAX_ERROR_BYTES - 3].decode("utf-8", "ignore") + "..."
    return message


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
