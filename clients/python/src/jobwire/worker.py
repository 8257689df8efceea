"""Worker: leases jobs over one stream and runs them on a pool of threads.

Why threads: handlers are plain functions, and most of them block (HTTP
calls, database drivers, subprocesses). A pool of ``concurrency`` threads runs
them as they are, and the gRPC sync API keeps the runtime's own work (the
Lease stream, heartbeats, acks) on a few more threads beside them. Handlers
written for asyncio belong on ``jobwire.aio.Worker``.

The threads, and the module that owns each:

    lease       _worker_lease.py      one Lease stream at a time; credit; reconnects
    handler*N   _worker_exec.py       run handlers; results to the outbox
    heartbeat   _worker_heartbeat.py  one Heartbeat call for every held token
    outbox      _worker_ack.py        batched acks, and nacks, retried until delivered

_lease_book.py holds the bookkeeping they share (and share with the asyncio
worker), with what must stay true of it. One more rule lives here: ``stop()``
only sets a flag, because it runs inside signal handlers, where taking a
lock that the interrupted main thread may hold would deadlock.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc

from . import _lease_book as book
from . import _worker_core as core
from ._backoff import Backoff
from ._convert import DurationLike
from ._rpc import TLS, ChannelOptions, make_channel, with_token
from ._worker_ack import Outbox
from ._worker_core import (
    DEFAULT_ACK_BATCH_SIZE,
    DEFAULT_ACK_FLUSH_INTERVAL,
    DEFAULT_CONCURRENCY,
    DEFAULT_RECONNECT_BACKOFF,
    DEFAULT_RPC_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    Settled,
)
from ._worker_exec import Executor, Handler, LeasedJob
from ._worker_heartbeat import Heartbeater
from ._worker_lease import LeaseStream, SharedState
from .v1 import worker_service_pb2_grpc

__all__ = ["Handler", "LeasedJob", "Worker"]

log = logging.getLogger("jobwire.worker")

# How often run() looks at the stop flag that signal handlers set.
SUPERVISOR_POLL = 0.05


class Worker:
    """Runs handlers for jobs leased from one or more queues, on threads.

        worker = Worker("localhost:50051", ["mail"], concurrency=8,
                        handlers={"send_welcome": send_welcome})
        worker.run()

    ``run()`` blocks until SIGTERM or SIGINT (when called on the main thread)
    or ``stop()``; then it stops taking jobs, lets running ones finish for up
    to ``shutdown_timeout`` seconds, delivers owed acks and returns. A second
    signal stops waiting for handlers at once. Handlers still running then
    see ``job.cancelled`` set (reason "shutdown"), and their jobs are nacked
    for an immediate retry elsewhere.

    ``token`` is sent as ``authorization: Bearer <token>`` on the Lease stream
    and on every Ack, Nack and Heartbeat; like Client's, it applies to a
    ``channel`` passed in too. A Lease stream the broker refuses stops
    ``run()`` with the JobwireError instead of reconnecting forever: no
    token or an unknown one (UNAUTHENTICATED), or a token without the
    ``work`` scope or the worker's queues (PERMISSION_DENIED).
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
        tls: TLS | None = None,
        token: str | None = None,
    ) -> None:
        self._opts = core.WorkerOptions.build(
            queues,
            concurrency,
            worker_id=worker_id,
            lease_duration=lease_duration,
            shutdown_timeout=shutdown_timeout,
            install_signal_handlers=install_signal_handlers,
            ack_flush_interval=ack_flush_interval,
            ack_batch_size=ack_batch_size,
            rpc_timeout=rpc_timeout,
            reconnect_backoff=reconnect_backoff,
            token=token,
        )
        self.address = address
        self._handlers: dict[str, Handler] = {}
        for job_type, fn in (handlers or {}).items():
            self.register(job_type, fn)

        self._own_channel = channel is None
        self._channel = channel if channel is not None else make_channel(address, channel_options, tls)
        if token is not None:
            self._channel = with_token(self._channel, token)

        # Set by stop() and signal handlers: plain attributes, see the module doc.
        self._stop_flag = False
        self._force_flag = False
        self._stop_wakeup = threading.Event()
        self._started = False
        self._fatal: BaseException | None = None
        #: Set once the first Lease stream has answered; handy for tests and readiness probes.
        self.connected = threading.Event()

    @property
    def queues(self) -> list[str]:
        return list(self._opts.queues)

    @property
    def concurrency(self) -> int:
        return self._opts.concurrency

    @property
    def worker_id(self) -> str:
        return self._opts.worker_id

    @property
    def shutdown_timeout(self) -> float:
        return self._opts.shutdown_timeout

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
        opts = self._opts
        stub = worker_service_pb2_grpc.WorkerServiceStub(self._channel)
        state = SharedState(opts)
        outbox = Outbox(state, stub)
        heartbeater = Heartbeater(state, stub)
        executor = Executor(state, outbox, dict(self._handlers))
        lease = LeaseStream(state, stub, executor.submit, self._fail, self.connected)

        restore = self._install_signals()
        helpers = {
            "outbox": self._thread("jobwire-outbox", outbox.run),
            "heartbeat": self._thread("jobwire-heartbeat", heartbeater.run),
        }
        handler_threads = [self._thread(f"jobwire-handler-{i}", executor.run) for i in range(opts.concurrency)]
        lease_thread = self._thread("jobwire-lease", lease.run)
        log.info(
            "worker %s starting: queues=%s concurrency=%d handlers=%s",
            opts.worker_id,
            ",".join(opts.queues),
            opts.concurrency,
            ",".join(sorted(self._handlers)) or "(none)",
        )
        try:
            for t in (*helpers.values(), *handler_threads, lease_thread):
                t.start()
            while not self._stop_flag:
                self._stop_wakeup.wait(SUPERVISOR_POLL)
            self._shutdown(state, lease, lease_thread, executor, outbox, heartbeater, helpers)
        finally:
            restore()
            if self._own_channel:
                self._channel.close()
        if self._fatal is not None:
            raise self._fatal

    # -- internals --------------------------------------------------------------

    def _fail(self, err: BaseException) -> None:
        if self._fatal is None:
            self._fatal = err
        self.stop()

    def _thread(self, name: str, fn: Callable[[], None]) -> threading.Thread:
        """A runtime thread; a bug in it stops the worker rather than leaving
        it half alive."""

        def run() -> None:
            try:
                fn()
            except BaseException as err:
                log.exception("worker %s: internal error in %s", self._opts.worker_id, name)
                self._fail(err)

        return threading.Thread(target=run, name=name, daemon=True)

    def _install_signals(self) -> Callable[[], None]:
        if not self._opts.install_signal_handlers or threading.current_thread() is not threading.main_thread():
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

    def _shutdown(
        self,
        state: SharedState,
        lease: LeaseStream,
        lease_thread: threading.Thread,
        executor: Executor,
        outbox: Outbox,
        heartbeater: Heartbeater,
        helpers: dict[str, threading.Thread],
    ) -> None:
        opts = self._opts
        deadline = time.monotonic() + opts.shutdown_timeout
        log.info("worker %s: stopping; no new jobs, waiting for running ones", opts.worker_id)
        # 1. Stop taking jobs: half-close the Lease request stream. The broker
        #    then sends nothing more and ends the stream.
        with state.lock:
            state.stopping.set()
            state.ledger.stream_closed()
            requests = state.requests
        if requests is not None:
            requests.put(None)
        lease_thread.join(core.HALF_CLOSE_GRACE)
        if lease_thread.is_alive():
            log.warning(
                "worker %s: broker did not end the lease stream after half-close; cancelling it", opts.worker_id
            )
            lease.cancel()
            lease_thread.join()

        # 2. Let running (and already delivered) jobs finish, up to the deadline.
        with state.lock:
            while state.ledger.busy > 0 and not self._force_flag:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                state.slots_changed.wait(min(left, SUPERVISOR_POLL))
            abandoned = book.unfinished(state.held)
            for held in abandoned:
                held.abandoned = True
                held.cancel(core.CANCEL_SHUTDOWN)
                outbox.nack_locked(core.shutdown_nack(held.token, opts.worker_id), _end_abandoned(held))
        if abandoned:
            log.warning(
                "worker %s: gave up on %d running jobs; nacked them for a retry", opts.worker_id, len(abandoned)
            )
        executor.close()

        # 3. Deliver what is owed, then stop the helpers.
        with state.lock:
            outbox.close_locked(core.FLUSH_TIMEOUT)
        helpers["outbox"].join(core.FLUSH_TIMEOUT + opts.rpc_timeout)
        with state.lock:
            heartbeater.stop_locked()
        helpers["heartbeat"].join(opts.rpc_timeout + 1)
        log.info("worker %s: stopped", opts.worker_id)


def _end_abandoned(held: book.HeldLease) -> Callable[[Settled], None]:
    """Ends the span of an attempt shutdown gave up on, once its nack is
    answered; the handler may never return to do it."""

    def done(settled: Settled) -> None:
        if held.span is not None:
            held.span.end(
                core.nack_outcome(settled, cancel_requested=False, permanent=False),
                core.ShutdownAbandoned(f"worker shut down before the handler of job {held.leased.job.id} finished"),
            )

    return done
