"""The threaded worker's handler threads: each takes a held lease off the work
queue, runs its handler inside the attempt's consumer span, and hands the
result to the outbox as an ack or a nack. The freed slot becomes credit."""

from __future__ import annotations

import datetime as _dt
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from . import _tracing
from . import _worker_core as core
from ._lease_book import HeldLease, leased_job_fields
from ._worker_ack import Outbox
from ._worker_core import Settled
from ._worker_lease import SharedState
from .errors import PermanentError
from .model import Job

log = logging.getLogger("jobwire.worker")


@dataclass(frozen=True)
class LeasedJob(Job):
    """One attempt at a job, as a threaded handler sees it: a Job, plus
    ``cancelled``, a threading.Event set when the handler should stop, and
    ``cancel_reason``, which says why.

    When the handler returns, the job is acked (COMPLETED), even after
    CancelJob: returning means the work was done. If it raises, the job is
    nacked: the broker retries it, or makes it DEAD (PermanentError, or the
    last attempt), or CANCELLED (after CancelJob). After a lost lease
    nothing is sent, since another attempt owns the job.
    """

    cancelled: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)
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


Handler = Callable[[LeasedJob], Any]


class Executor:
    """``concurrency`` handler threads and the queue that feeds them."""

    def __init__(self, state: SharedState, outbox: Outbox, handlers: Mapping[str, Handler]) -> None:
        self._state = state
        self._outbox = outbox
        self._handlers = handlers
        self._work: queue.SimpleQueue[HeldLease | None] = queue.SimpleQueue()

    def submit(self, lease: HeldLease) -> None:
        self._work.put(lease)

    def close(self) -> None:
        """Ends every handler thread once it is idle."""
        for _ in range(self._state.opts.concurrency):
            self._work.put(None)

    def run(self) -> None:
        while True:
            lease = self._work.get()
            if lease is None:
                return
            try:
                self._execute(lease)
            finally:
                self._free_slot(lease)

    def _execute(self, lease: HeldLease) -> None:
        state = self._state
        cancelled = threading.Event()
        with state.lock:
            if lease.lost or lease.abandoned:
                return
            lease.signal = cancelled.set
            if lease.cancel_reason is not None:
                cancelled.set()
            if lease.leased.job.cancel_requested:
                lease.cancel(core.CANCEL_REQUESTED)
            span = _tracing.ConsumerSpan(_tracing.start_consumer_span(lease.leased.job, state.opts.worker_id))
            lease.span = span
            lease.started = True
        failure: BaseException | None = None
        permanent = False
        with trace.use_span(span.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            try:
                job = LeasedJob(**leased_job_fields(lease), cancelled=cancelled, _lease=lease)
                handler = self._handlers.get(job.type)
                if handler is None:
                    raise core.no_handler(job.type, state.opts.worker_id, list(self._handlers))
                _ = job.payload  # decoded now, so that bad JSON fails here, permanently
                handler(job)
            except PermanentError as err:
                failure, permanent = err, True
            except BaseException as err:  # noqa: BLE001 - a handler's failure is the job's, never the worker's
                failure = err
        self._report(lease, span, failure, permanent)

    def _report(
        self, lease: HeldLease, span: _tracing.ConsumerSpan, failure: BaseException | None, permanent: bool
    ) -> None:
        state = self._state
        job = lease.leased.job
        with state.lock:
            if lease.abandoned:
                return  # shutdown nacked it already, and ends the span
            lost = lease.lost
            cancel_requested = lease.cancel_reason == core.CANCEL_REQUESTED
            if not lost and failure is None:
                self._outbox.ack_locked(lease.token, lambda s: span.end(core.ack_outcome(s)))
            elif not lost and failure is not None:

                def nacked(s: Settled, failure: BaseException = failure) -> None:
                    span.end(core.nack_outcome(s, cancel_requested=cancel_requested, permanent=permanent), failure)

                self._outbox.nack_locked(core.failure_nack(lease.token, failure, permanent), nacked)
        if lost:
            span.end(_tracing.OUTCOME_LEASE_LOST, failure)
            log.warning("job %s (%s): lease lost while running; its result is dropped", job.id, job.type)
        elif failure is not None:
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
        with state.lock:
            lease.finished = True
            if lease.lost:
                # Nothing is owed for a lost lease. (An abandoned one's nack is
                # queued, and it is unheld once that is answered.)
                state.held.pop(lease.token, None)
            state.send_credit_locked(state.ledger.freed(len(state.held)))
            state.slots_changed.notify_all()
