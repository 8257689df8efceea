"""The threaded worker's outbox: acks batched within ack_flush_interval into
one Ack call, and nacks, both retried on transient errors until delivered,
so that a broken stream or a restarting broker loses none of them.

Each entry carries a callback that learns what became of it (accepted, lease
lost, or failed), which ends the attempt's consumer span with its outcome.
Callbacks run on the outbox thread, outside the lock.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from . import _worker_core as core
from ._worker_core import Delivery, Settled
from ._worker_lease import SharedState
from .errors import status_code
from .v1 import worker_service_pb2, worker_service_pb2_grpc

log = logging.getLogger("jobwire.worker")

Done = Callable[[Settled], None]
_Nack = tuple[worker_service_pb2.NackRequest, Done]


@dataclass
class _GiveUp:
    acks: list[tuple[str, Done]]
    nacks: list[_Nack]


class Outbox:
    def __init__(self, state: SharedState, stub: worker_service_pb2_grpc.WorkerServiceStub) -> None:
        self._state = state
        self._stub = stub
        self._acks: list[tuple[str, Done]] = []
        self._first_ack_at = 0.0
        self._nacks: collections.deque[_Nack] = collections.deque()
        self._closing = False
        self._deadline = 0.0

    # -- called with state.lock held ---------------------------------------------

    def ack_locked(self, token: str, done: Done) -> None:
        if not self._acks:
            self._first_ack_at = time.monotonic()
        self._acks.append((token, done))
        self._state.outbox_wakeup.notify()

    def nack_locked(self, request: worker_service_pb2.NackRequest, done: Done) -> None:
        self._nacks.append((request, done))
        self._state.outbox_wakeup.notify()

    def close_locked(self, timeout: float) -> None:
        """Delivers what is queued, for up to timeout seconds, then stops."""
        self._closing = True
        self._deadline = time.monotonic() + timeout
        self._state.outbox_wakeup.notify_all()

    # -- the outbox thread ----------------------------------------------------------

    def run(self) -> None:
        state = self._state
        failures = 0
        while True:
            with state.lock:
                work = self._next_locked()
            if isinstance(work, _GiveUp):
                self._give_up(work.acks, work.nacks)
                return
            acks, nack = work
            ok = True
            if acks:
                ok = self._deliver_acks(acks)
            if nack is not None:
                ok = self._deliver_nack(nack) and ok
            if ok:
                failures = 0
                continue
            pause = state.opts.delivery_backoff.delay(failures)
            failures += 1
            with state.lock:
                if not self._closing or time.monotonic() + pause < self._deadline:
                    state.outbox_wakeup.wait(pause)

    def _next_locked(self) -> tuple[list[tuple[str, Done]], _Nack | None] | _GiveUp:
        """Waits for the next batch: any nack, or acks once the oldest has
        waited ack_flush_interval or a batch is full. When closing, returns
        what is left once it is empty or the deadline has passed."""
        opts = self._state.opts
        while True:
            now = time.monotonic()
            if self._closing and (now >= self._deadline or not (self._acks or self._nacks)):
                left = _GiveUp(self._acks, list(self._nacks))
                self._acks, self._nacks = [], collections.deque()
                return left
            flush_at = self._first_ack_at + opts.ack_flush_interval
            if self._nacks or (
                self._acks and (self._closing or len(self._acks) >= opts.ack_batch_size or now >= flush_at)
            ):
                acks = self._acks[: opts.ack_batch_size]
                del self._acks[: len(acks)]
                if self._acks:
                    self._first_ack_at = now
                return acks, (self._nacks.popleft() if self._nacks else None)
            self._state.outbox_wakeup.wait(flush_at - now if self._acks else None)

    def _give_up(self, acks: Sequence[tuple[str, Done]], nacks: Sequence[_Nack]) -> None:
        if acks or nacks:
            log.error(
                "worker %s: gave up delivering %d acks and %d nacks at shutdown",
                self._state.opts.worker_id,
                len(acks),
                len(nacks),
            )
        for _, done in (*acks, *nacks):
            done(Settled(Delivery.FAILED))

    def _deliver_acks(self, items: list[tuple[str, Done]]) -> bool:
        """Sends one Ack; on a transient failure puts the tokens back first in line."""
        state, opts = self._state, self._state.opts
        tokens = [token for token, _ in items]
        try:
            response = self._stub.Ack(worker_service_pb2.AckRequest(lease_tokens=tokens), timeout=opts.rpc_timeout)
        except grpc.RpcError as err:
            code = status_code(err)
            if code in core.RETRYABLE_DELIVERY_CODES:
                log.warning("worker %s: Ack of %d tokens failed (%s); retrying", opts.worker_id, len(tokens), code)
                with state.lock:
                    if not self._acks:
                        self._first_ack_at = time.monotonic()
                    self._acks[:0] = items
                return False
            log.error("worker %s: Ack refused (%s); dropping %d tokens", opts.worker_id, code, len(tokens))
            results = {token: Settled(Delivery.FAILED) for token in tokens}
        else:
            lost = set(response.lost_lease_tokens)
            for token in lost:
                log.warning("worker %s: ack came too late, the lease was lost (token %s)", opts.worker_id, token)
            results = {t: Settled(Delivery.LEASE_LOST if t in lost else Delivery.ACCEPTED) for t in tokens}
        with state.lock:
            for token in tokens:
                state.held.pop(token, None)
            state.released_locked()
        for token, done in items:
            done(results[token])
        return True

    def _deliver_nack(self, item: _Nack) -> bool:
        state, opts = self._state, self._state.opts
        request, done = item
        try:
            response = self._stub.Nack(request, timeout=opts.rpc_timeout)
        except grpc.RpcError as err:
            code = status_code(err)
            if code in core.RETRYABLE_DELIVERY_CODES:
                log.warning("worker %s: Nack failed (%s); retrying", opts.worker_id, code)
                with state.lock:
                    self._nacks.appendleft(item)
                return False
            if code is grpc.StatusCode.FAILED_PRECONDITION:
                log.warning("worker %s: nack came too late, the lease was lost", opts.worker_id)
                settled = Settled(Delivery.LEASE_LOST)
            else:
                log.error("worker %s: Nack refused (%s); dropped", opts.worker_id, code)
                settled = Settled(Delivery.FAILED)
        else:
            settled = Settled(Delivery.ACCEPTED, response.state)
        with state.lock:
            state.held.pop(request.lease_token, None)
            state.released_locked()
        done(settled)
        return True
