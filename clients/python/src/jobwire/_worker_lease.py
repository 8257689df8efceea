"""The threaded worker's Lease stream, and the state its threads share.

One stream at a time: it opens with max_in_flight = concurrency, turns each
LeasedJob into a held lease for the handler threads, sends credit back as
slots free up (see _lease_book for the rules), and reconnects with jittered
backoff when the stream breaks or the broker drains.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from . import _lease_book as book
from . import _worker_core as core
from .errors import JobwireError, status_code
from .v1 import worker_service_pb2, worker_service_pb2_grpc

log = logging.getLogger("jobwire.worker")


class SharedState:
    """What the lease, handler, heartbeat and outbox threads share; every
    field is guarded by ``lock``."""

    def __init__(self, opts: core.WorkerOptions) -> None:
        self.opts = opts
        self.lock = threading.Lock()
        self.slots_changed = threading.Condition(self.lock)
        self.heartbeat_wakeup = threading.Condition(self.lock)
        self.outbox_wakeup = threading.Condition(self.lock)
        self.held: dict[str, book.HeldLease] = {}
        self.ledger = book.CreditLedger(opts.concurrency)
        # The current stream's request queue; None between streams.
        self.requests: queue.SimpleQueue[worker_service_pb2.LeaseRequest | None] | None = None
        # Set once shutdown has begun; the lease thread's waits end on it.
        self.stopping = threading.Event()

    def send_credit_locked(self, count: int) -> None:
        if count and self.requests is not None:
            self.requests.put(core.credit_request(count))

    def released_locked(self) -> None:
        """Held tokens were let go (their acks or nacks answered, or their
        leases lost): credit held back while acks lagged may go now."""
        self.send_credit_locked(self.ledger.released(len(self.held)))


class LeaseStream:
    """The lease thread's loop. ``submit`` hands a held lease to the handler
    threads; ``fail`` stops the worker with an error reconnecting cannot fix."""

    def __init__(
        self,
        state: SharedState,
        stub: worker_service_pb2_grpc.WorkerServiceStub,
        submit: Callable[[book.HeldLease], None],
        fail: Callable[[BaseException], None],
        connected: threading.Event,
    ) -> None:
        self._state = state
        self._stub = stub
        self._submit = submit
        self._fail = fail
        self._connected = connected
        self._call: Any = None

    def cancel(self) -> None:
        """Cancels the current call, for a broker that does not end the
        stream after the half-close."""
        call = self._call
        if call is not None:
            call.cancel()

    def run(self) -> None:
        state, opts = self._state, self._state.opts
        attempt = 0
        while True:
            requests: queue.SimpleQueue[worker_service_pb2.LeaseRequest | None] = queue.SimpleQueue()
            with state.lock:
                if state.stopping.is_set():
                    return
                state.ledger.stream_opened()
                state.requests = requests
            call = self._stub.Lease(_request_stream(opts.open_request(), requests))
            self._call = call
            broke: grpc.RpcError | None = None
            try:
                for response in call:
                    if attempt or not self._connected.is_set():
                        log.info("worker %s: lease stream open", opts.worker_id)
                    attempt = 0
                    self._connected.set()
                    for leased in response.jobs:
                        self._accept(leased)
                    if response.jobs:
                        with state.lock:
                            state.send_credit_locked(state.ledger.received(len(response.jobs), len(state.held)))
            except grpc.RpcError as err:
                broke = err
            finally:
                with state.lock:
                    state.requests = None
                    state.ledger.stream_closed()
                requests.put(None)  # ends the request iterator if it still runs

            if state.stopping.is_set():
                return
            code = status_code(broke) if broke is not None else None
            if broke is None:
                # The broker ends streams itself only when it drains.
                log.info("worker %s: broker ended the lease stream; reconnecting", opts.worker_id)
            elif code in core.FATAL_STREAM_CODES:
                refused = JobwireError.from_rpc_error(broke, "Lease")
                log.error("worker %s: lease stream refused, stopping: %s", opts.worker_id, refused)
                self._fail(refused)
                return
            else:
                # Loud once per outage, quiet while the broker stays away.
                log.log(
                    logging.WARNING if attempt == 0 else logging.DEBUG,
                    "worker %s: lease stream broke (%s); reconnecting",
                    opts.worker_id,
                    JobwireError.from_rpc_error(broke, "Lease"),
                )
            pause = opts.reconnect_backoff.delay(attempt)
            attempt += 1
            if state.stopping.wait(pause):
                return

    def _accept(self, leased: worker_service_pb2.LeasedJob) -> None:
        state = self._state
        lease = book.new_lease(leased, state.opts.lease_duration)
        with state.lock:
            if lease.token in state.held:
                log.warning(
                    "worker %s: lease token delivered twice, ignored: job %s", state.opts.worker_id, leased.job.id
                )
                return
            state.held[lease.token] = lease
            state.ledger.accepted()
            state.heartbeat_wakeup.notify()
        self._submit(lease)


def _request_stream(
    opening: worker_service_pb2.LeaseRequest,
    requests: queue.SimpleQueue[worker_service_pb2.LeaseRequest | None],
) -> Iterator[worker_service_pb2.LeaseRequest]:
    """The Lease request stream: open, then credits, until None half-closes it."""
    yield opening
    while True:
        item = requests.get()
        if item is None:
            return
        yield item
