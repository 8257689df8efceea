"""jobwire.aio.Worker: the worker runtime for async handlers, on grpc.aio.

The same runtime as the threaded jobwire.Worker, as tasks on one event loop
instead of threads; the modules mirror the threaded ones:

    lease       _worker_lease.py      one Lease stream at a time; credit; reconnects
    job*N       _worker_exec.py       a task per leased job; its handler in a task of its own
    heartbeat   _worker_heartbeat.py  one Heartbeat call for every held token
    outbox      _worker_ack.py        batched acks, and nacks, retried until delivered

The bookkeeping (credit, held leases, outcomes) is jobwire/_lease_book.py and
jobwire/_worker_core.py, shared with the threaded worker.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import grpc.aio

from .. import _lease_book as book
from .. import _worker_core as core
from .._backoff import Backoff
from .._convert import DurationLike
from .._rpc import TLS, ChannelOptions
from .._worker_core import (
    DEFAULT_ACK_BATCH_SIZE,
    DEFAULT_ACK_FLUSH_INTERVAL,
    DEFAULT_CONCURRENCY,
    DEFAULT_RECONNECT_BACKOFF,
    DEFAULT_RPC_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    Settled,
)
from ..v1 import worker_service_pb2_grpc
from ._rpc import make_channel, token_metadata
from ._worker_ack import Outbox
from ._worker_exec import AsyncHandler, Executor, LeasedJob
from ._worker_heartbeat import Heartbeater
from ._worker_lease import LeaseStream, SharedState

__all__ = ["AsyncHandler", "LeasedJob", "Worker"]

log = logging.getLogger("jobwire.worker")

# How long shutdown waits, after cancelling the handlers it gave up on, for
# their tasks to end. A handler that swallows the cancellation is left
# behind; its job was nacked already.
CANCEL_GRACE = 5.0


class Worker:
    """Runs async handlers for jobs leased from one or more queues.

        async def send_welcome(job: jobwire.aio.LeasedJob) -> None:
            await mailer.send(job.payload["to"])

        worker = jobwire.aio.Worker("localhost:50051", ["mail"], concurrency=50,
                                    handlers={"send_welcome": send_welcome})
        await worker.run()

    ``await run()`` runs until ``stop()`` or, when the loop runs on the main
    thread, SIGTERM or SIGINT; then it stops taking jobs, lets running ones
    finish for up to ``shutdown_timeout`` seconds, delivers owed acks and
    returns. A second signal stops waiting at once. Handlers still running
    then are cancelled (``job.cancel_reason == "shutdown"``) and their jobs
    nacked for an immediate retry elsewhere.

    Cancelling the task that awaits ``run()`` stops at once, without that
    drain: running jobs' leases expire and the broker runs them again. Call
    ``stop()`` to drain.

    Handlers are coroutine functions of one LeasedJob; see LeasedJob for how
    cancellation reaches them. The options are jobwire.Worker's; a
    ``channel`` passed in must be a ``grpc.aio.Channel``.
    """

    def __init__(
        self,
        address: str,
        queues: Sequence[str] | str,
        concurrency: int = DEFAULT_CONCURRENCY,
        handlers: Mapping[str, AsyncHandler] | None = None,
        *,
        worker_id: str | None = None,
        lease_duration: DurationLike | None = None,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        install_signal_handlers: bool = True,
        ack_flush_interval: float = DEFAULT_ACK_FLUSH_INTERVAL,
        ack_batch_size: int = DEFAULT_ACK_BATCH_SIZE,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
        reconnect_backoff: Backoff = DEFAULT_RECONNECT_BACKOFF,
        channel: grpc.aio.Channel | None = None,
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
        self._handlers: dict[str, AsyncHandler] = {}
        for job_type, fn in (handlers or {}).items():
            self.register(job_type, fn)
        self._channel = channel
        self._channel_options = channel_options
        self._tls = tls
        self._metadata = token_metadata(token)

        self._started = False
        self._stop_flag = False
        self._force_flag = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._force_event: asyncio.Event | None = None
        self._fatal: BaseException | None = None
        #: Set once the first Lease stream has answered; handy for tests and readiness probes.
        self.connected = asyncio.Event()

    @property
    def queues(self) -> list[str]:
        return list(self._opts.queues)

    @property
    def concurrency(self) -> int:
        return self._opts.concurrency

    @property
    def worker_id(self) -> str:
        return self._opts.worker_id

    # -- public API -----------------------------------------------------------

    def register(self, job_type: str, fn: AsyncHandler) -> None:
        """Adds a handler for a job type (before run()). It must be a
        coroutine function: blocking handlers belong on jobwire.Worker, or
        in ``asyncio.to_thread`` inside an async one."""
        if not job_type:
            raise ValueError("job type must not be empty")
        if not callable(fn):
            raise TypeError(f"handler for {job_type!r} is not callable")
        if not (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)):
            raise TypeError(
                f"handler for {job_type!r} is not a coroutine function (async def); "
                "use jobwire.Worker for blocking handlers"
            )
        self._handlers[job_type] = fn

    def handler(self, job_type: str) -> Callable[[AsyncHandler], AsyncHandler]:
        """Decorator form of register()."""

        def wrap(fn: AsyncHandler) -> AsyncHandler:
            self.register(job_type, fn)
            return fn

        return wrap

    def stop(self) -> None:
        """Asks run() to shut down gracefully, as SIGTERM does. Returns at
        once; safe from any thread, and before run() has started."""
        self._stop_flag = True
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            if _on_loop(loop):
                event.set()
            else:
                loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        """Takes and runs jobs until stopped; see the class doc."""
        if self._started:
            raise RuntimeError("a Worker runs once; make a new one")
        self._started = True
        opts = self._opts
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._force_event = asyncio.Event()
        if self._stop_flag:
            self._stop_event.set()
        own_channel = self._channel is None
        channel = (
            self._channel if self._channel is not None else make_channel(self.address, self._channel_options, self._tls)
        )
        state = SharedState(opts, worker_service_pb2_grpc.WorkerServiceStub(channel), self._metadata)
        outbox = Outbox(state)
        heartbeater = Heartbeater(state)
        executor = Executor(state, outbox, dict(self._handlers))
        lease = LeaseStream(state, executor.submit, self._fail, self.connected)
        restore = self._install_signals()
        log.info(
            "worker %s starting: queues=%s concurrency=%d handlers=%s",
            opts.worker_id,
            ",".join(opts.queues),
            opts.concurrency,
            ",".join(sorted(self._handlers)) or "(none)",
        )
        helpers = {
            "outbox": self._task("jobwire-outbox", outbox.run()),
            "heartbeat": self._task("jobwire-heartbeat", heartbeater.run()),
        }
        lease_task = self._task("jobwire-lease", lease.run())
        try:
            await self._stop_event.wait()
            await self._shutdown(state, lease, lease_task, executor, outbox, heartbeater, helpers)
        finally:
            restore()
            for task in (lease_task, *helpers.values()):
                task.cancel()
            if own_channel:
                await channel.close()
        if self._fatal is not None:
            raise self._fatal

    # -- internals --------------------------------------------------------------

    def _fail(self, err: BaseException) -> None:
        if self._fatal is None:
            self._fatal = err
        self.stop()

    def _task(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A runtime task; a bug in it stops the worker rather than leaving it
        half alive."""

        async def run() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except BaseException as err:
                log.exception("worker %s: internal error in %s", self._opts.worker_id, name)
                self._fail(err)

        return asyncio.get_running_loop().create_task(run(), name=name)

    def _install_signals(self) -> Callable[[], None]:
        loop = self._loop
        if loop is None or not self._opts.install_signal_handlers:
            return lambda: None
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal() -> None:
            if self._stop_flag and self._force_event is not None:
                self._force_flag = True
                self._force_event.set()
            self.stop()

        previous: dict[signal.Signals, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.getsignal(sig)
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError, ValueError):  # not a Unix loop
                previous.pop(sig, None)

        def restore() -> None:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                if handler is not None:
                    signal.signal(sig, handler)

        return restore

    async def _shutdown(
        self,
        state: SharedState,
        lease: LeaseStream,
        lease_task: asyncio.Task[None],
        executor: Executor,
        outbox: Outbox,
        heartbeater: Heartbeater,
        helpers: dict[str, asyncio.Task[None]],
    ) -> None:
        opts = self._opts
        deadline = time.monotonic() + opts.shutdown_timeout
        log.info("worker %s: stopping; no new jobs, waiting for running ones", opts.worker_id)
        # 1. Stop taking jobs: half-close the Lease request stream. The broker
        #    then sends nothing more and ends the stream.
        state.stopping.set()
        lease.half_close()
        done, _ = await asyncio.wait({lease_task}, timeout=core.HALF_CLOSE_GRACE)
        if not done:
            log.warning(
                "worker %s: broker did not end the lease stream after half-close; cancelling it", opts.worker_id
            )
            lease.cancel()
            await asyncio.wait({lease_task})

        # 2. Let running (and already delivered) jobs finish, up to the deadline.
        while state.ledger.busy > 0 and not self._force_flag:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            state.slots_changed.clear()
            assert self._force_event is not None
            await _wait_any((state.slots_changed, self._force_event), left)
        abandoned = book.unfinished(state.held)
        for held in abandoned:
            held.abandoned = True
            outbox.nack(core.shutdown_nack(held.token, opts.worker_id), _end_abandoned(held))
            held.cancel(core.CANCEL_SHUTDOWN)
        if abandoned:
            log.warning(
                "worker %s: gave up on %d running jobs; nacked them for a retry", opts.worker_id, len(abandoned)
            )
            if executor.tasks:
                await asyncio.wait(set(executor.tasks), timeout=CANCEL_GRACE)
        for task in list(executor.tasks):
            task.cancel()

        # 3. Deliver what is owed, then stop the helpers.
        outbox.close(core.FLUSH_TIMEOUT)
        await asyncio.wait({helpers["outbox"]}, timeout=core.FLUSH_TIMEOUT + opts.rpc_timeout)
        heartbeater.stop()
        await asyncio.wait({helpers["heartbeat"]}, timeout=opts.rpc_timeout + 1)
        log.info("worker %s: stopped", opts.worker_id)


async def _wait_any(events: Sequence[asyncio.Event], timeout: float) -> None:
    waiters = {asyncio.ensure_future(e.wait()) for e in events}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _end_abandoned(held: book.HeldLease) -> Callable[[Settled], None]:
    """Ends the span of an attempt shutdown gave up on, once its nack is
    answered."""

    def done(settled: Settled) -> None:
        if held.span is not None:
            held.span.end(
                core.nack_outcome(settled, cancel_requested=False, permanent=False),
                core.ShutdownAbandoned(f"worker shut down before the handler of job {held.leased.job.id} finished"),
            )

    return done
