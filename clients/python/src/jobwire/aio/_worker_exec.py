"""The asyncio worker's job tasks: one per held lease, waiting for one of
``concurrency`` slots, then running the handler in a task of its own inside
the attempt's consumer span, and handing the result to the outbox.

Cancellation reaches the handler as asyncio.CancelledError: its task is
cancelled (after ``job.cancelled`` is set), because in asyncio that is the
only way to interrupt an await the handler does not own, such as an HTTP
call or a database query. It is what the Go runtime's context and the
TypeScript runtime's AbortSignal give their handlers.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from .. import _tracing
from .. import _worker_core as core
from .._lease_book import HeldLease, leased_job_fields
from .._worker_core import Settled
from ..errors import PermanentError
from ..model import Job
from ._worker_ack import Outbox
from ._worker_lease import SharedState

log = logging.getLogger("jobwire.worker")


@dataclass(frozen=True)
class LeasedJob(Job):
    """One attempt at a job, as an asyncio handler sees it: a Job, plus
    ``cancelled``, an asyncio.Event set when the handler should stop, and
    ``cancel_reason``, which says why.

    When the job is cancelled (CancelJob), its lease is lost, or shutdown
    gives up waiting, the event is set and then the handler's task is
    cancelled: the handler sees asyncio.CancelledError at its next await.
    Let it propagate (the job is nacked; after CancelJob the broker makes it
    CANCELLED), or catch it and return, which acks the job (COMPLETED): a
    handler that returns has done its work. Work that must not be
    interrupted can run under ``asyncio.shield`` and look at the event.
    """

    cancelled: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)
    _lease: HeldLease | None = field(default=None, repr=False, compare=False)

    @property
    def cancel_reason(self) -> str | None:
        """None, "cancel_requested" (CancelJob), "lost" (the lease expired or
        was taken over) or "shutdown" (the worker stopped waiting)."""
        return self._lease.cancel_reason if self._lease is not None else None

    @property
    def lease_deadline(self) -> _dt.datetime | None:
        """When the lease runs out unless heartbeated (the worker does that)."""
        if self._lease is None:
            return None
        return _dt.datetime.fromtimestamp(self._lease.expires_at, _dt.timezone.utc)


AsyncHandler = Callable[[LeasedJob], Awaitable[Any]]


class Executor:
    """Starts a task per held lease; at most ``concurrency`` handlers run."""

    def __init__(self, state: SharedState, outbox: Outbox, handlers: Mapping[str, AsyncHandler]) -> None:
        self._state = state
        self._outbox = outbox
        self._handlers = handlers
        self._slots = asyncio.Semaphore(state.opts.concurrency)
        self.tasks: set[asyncio.Task[None]] = set()

    def submit(self, lease: HeldLease) -> None:
        task = asyncio.get_running_loop().create_task(self._run(lease), name=f"jobwire-job-{lease.leased.job.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, lease: HeldLease) -> None:
        try:
            async with self._slots:
                if not (lease.lost or lease.abandoned):
                    await self._execute(lease)
        finally:
            self._free_slot(lease)

    async def _execute(self, lease: HeldLease) -> None:
        state = self._state
        cancelled = asyncio.Event()
        job = LeasedJob(**leased_job_fields(lease), cancelled=cancelled, _lease=lease)
        span = _tracing.ConsumerSpan(_tracing.start_consumer_span(lease.leased.job, state.opts.worker_id))
        lease.span = span
        lease.started = True
        with trace.use_span(span.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            # The task copies the current context, so the handler runs inside the span.
            handler_task = asyncio.get_running_loop().create_task(self._call(job), name=f"jobwire-handler-{job.id}")

        def signal() -> None:
            cancelled.set()
            handler_task.cancel()

        lease.signal = signal
        # Cancelled before it started (while it waited for a slot, or before
        # it was leased): the handler's body never runs.
        if lease.cancel_reason is not None:
            signal()
        elif lease.leased.job.cancel_requested:
            lease.cancel(core.CANCEL_REQUESTED)
        # Waits without being cancelled along with the handler: wait() does
        # not raise what the task raised.
        await asyncio.wait({handler_task})
        failure: BaseException | None = None
        permanent = False
        if handler_task.cancelled():
            failure = asyncio.CancelledError(f"cancelled ({lease.cancel_reason or 'by the handler'})")
        elif (exc := handler_task.exception()) is not None:
            failure, permanent = exc, isinstance(exc, PermanentError)
        self._report(lease, span, failure, permanent)

    async def _call(self, job: LeasedJob) -> None:
        handler = self._handlers.get(job.type)
        if handler is None:
            raise core.no_handler(job.type, self._state.opts.worker_id, list(self._handlers))
        _ = job.payload  # decoded now, so that bad JSON fails here, permanently
        await handler(job)

    def _report(
        self, lease: HeldLease, span: _tracing.ConsumerSpan, failure: BaseException | None, permanent: bool
    ) -> None:
        job = lease.leased.job
        if lease.abandoned:
            return  # shutdown nacked it already, and ends the span
        if lease.lost:
            span.end(_tracing.OUTCOME_LEASE_LOST, failure)
            log.warning("job %s (%s): lease lost while running; its result is dropped", job.id, job.type)
            return
        if failure is None:
            self._outbox.ack(lease.token, lambda s: span.end(core.ack_outcome(s)))
            return
        cancel_requested = lease.cancel_reason == core.CANCEL_REQUESTED

        def nacked(s: Settled) -> None:
            span.end(core.nack_outcome(s, cancel_requested=cancel_requested, permanent=permanent), failure)

        self._outbox.nack(core.failure_nack(lease.token, failure, permanent), nacked)
        log.log(
            logging.WARNING if permanent else logging.INFO,
            "job %s (%s) attempt %d failed%s: %s",
            job.id,
            job.type,
            job.attempt,
            " permanently" if permanent else "",
            core.error_message(failure, permanent),
        )

    def _free_slot(self, lease: HeldLease) -> None:
        state = self._state
        lease.finished = True
        if lease.lost:
            # Nothing is owed for a lost lease. (An abandoned one's nack is
            # queued, and it is unheld once that is answered.)
            state.held.pop(lease.token, None)
        state.send_credit(state.ledger.freed(len(state.held)))
        state.slots_changed.set()
