"""The asyncio worker's Lease stream, and the state its tasks share.

As in the threaded worker (jobwire/_worker_lease.py): one stream at a time,
opened with max_in_flight = concurrency; each LeasedJob becomes a held lease
and a task; credit goes back as slots free up (jobwire/_lease_book.py has the
rules); a broken stream is reopened with jittered backoff. Everything runs on
one event loop, so the shared state needs no lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from .. import _lease_book as book
from .. import _worker_core as core
from ..errors import JobwireError, status_code
from ..v1 import worker_service_pb2
from ._rpc import Metadata

log = logging.getLogger("jobwire.worker")


class SharedState:
    """What the lease, job, heartbeat and outbox tasks share."""

    def __init__(self, opts: core.WorkerOptions, stub: Any, metadata: Metadata) -> None:
        self.opts = opts
        self.stub = stub
        self.metadata = metadata
        self.held: dict[str, book.HeldLease] = {}
        self.ledger = book.CreditLedger(opts.concurrency)
        # The current stream's request queue; None between streams.
        self.requests: asyncio.Queue[worker_service_pb2.LeaseRequest | None] | None = None
        # Set once shutdown has begun.
        self.stopping = asyncio.Event()
        # Set whenever a slot frees; shutdown waits on it.
        self.slots_changed = asyncio.Event()
        self.heartbeat_wakeup = asyncio.Event()

    def send_credit(self, count: int) -> None:
        if count and self.requests is not None:
            self.requests.put_nowait(core.credit_request(count))

    def released(self) -> None:
        """Held tokens were let go (their acks or nacks answered, or their
        leases lost): credit held back while acks lagged may go now."""
        self.send_credit(self.ledger.released(len(self.held)))


class LeaseStream:
    """The lease task's loop. ``submit`` starts a held lease's job task;
    ``fail`` stops the worker with an error reconnecting cannot fix."""

    def __init__(
        self,
        state: SharedState,
        submit: Callable[[book.HeldLease], None],
        fail: Callable[[BaseException], None],
        connected: asyncio.Event,
    ) -> None:
        self._state = state
        self._submit = submit
        self._fail = fail
        self._connected = connected
        self._call: grpc.aio.StreamStreamCall[Any, Any] | None = None

    def half_close(self) -> None:
        """Ends the request stream: the broker then sends nothing more and
        ends the call."""
        state = self._state
        state.ledger.stream_closed()
        if state.requests is not None:
            state.requests.put_nowait(None)

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

    async def run(self) -> None:
        state, opts = self._state, self._state.opts
        attempt = 0
        while not state.stopping.is_set():
            requests: asyncio.Queue[worker_service_pb2.LeaseRequest | None] = asyncio.Queue()
            state.ledger.stream_opened()
            state.requests = requests
            call = state.stub.Lease(_request_stream(opts.open_request(), requests), metadata=state.metadata or None)
            self._call = call
            broke: grpc.RpcError | None = None
            try:
                async for response in call:
                    if attempt or not self._connected.is_set():
                        log.info("worker %s: lease stream open", opts.worker_id)
                    attempt = 0
                    self._connected.set()
                    for leased in response.jobs:
                        self._accept(leased)
                    if response.jobs:
                        state.send_credit(state.ledger.received(len(response.jobs), len(state.held)))
            except grpc.RpcError as err:
                broke = err
            finally:
                state.requests = None
                state.ledger.stream_closed()
                self._call = None
                requests.put_nowait(None)  # ends the request iterator if it still runs

            if state.stopping.is_set():
                return
            if broke is None:
                # The broker ends streams itself only when it drains.
                log.info("worker %s: broker ended the lease stream; reconnecting", opts.worker_id)
            elif status_code(broke) in core.FATAL_STREAM_CODES:
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
            try:
                await asyncio.wait_for(state.stopping.wait(), pause)
            except asyncio.TimeoutError:
                pass

    def _accept(self, leased: worker_service_pb2.LeasedJob) -> None:
        state = self._state
        lease = book.new_lease(leased, state.opts.lease_duration)
        if lease.token in state.held:
            log.warning("worker %s: lease token delivered twice, ignored: job %s", state.opts.worker_id, leased.job.id)
            return
        state.held[lease.token] = lease
        state.ledger.accepted()
        state.heartbeat_wakeup.set()
        self._submit(lease)


async def _request_stream(
    opening: worker_service_pb2.LeaseRequest,
    requests: asyncio.Queue[worker_service_pb2.LeaseRequest | None],
) -> AsyncIterator[worker_service_pb2.LeaseRequest]:
    """The Lease request stream: open, then credits, until None half-closes it."""
    yield opening
    while True:
        item = await requests.get()
        if item is None:
            return
        yield item
