"""The asyncio worker's outbox task: acks batched within ack_flush_interval
into one Ack call, and nacks, retried on transient errors until delivered.
Each entry's callback learns what became of it and ends the attempt's span
(as in jobwire/_worker_ack.py, the threaded one)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import grpc

from .. import _worker_core as core
from .._worker_core import Delivery, Settled
from ..errors import status_code
from ..v1 import worker_service_pb2
from ._worker_lease import SharedState

log = logging.getLogger("jobwire.worker")

Done = Callable[[Settled], None]
_Nack = tuple[worker_service_pb2.NackRequest, Done]


class Outbox:
    def __init__(self, state: SharedState) -> None:
        self._state = state
        self._acks: list[tuple[str, Done]] = []
        self._first_ack_at = 0.0
        self._nacks: collections.deque[_Nack] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._deadline = 0.0

    def ack(self, token: str, done: Done) -> None:
        if not self._acks:
            self._first_ack_at = time.monotonic()
        self._acks.append((token, done))
        self._wakeup.set()

    def nack(self, request: worker_service_pb2.NackRequest, done: Done) -> None:
        self._nacks.append((request, done))
        self._wakeup.set()

    def close(self, timeout: float) -> None:
        """Delivers what is queued, for up to timeout seconds, then stops."""
        self._closing = True
        self._deadline = time.monotonic() + timeout
        self._wakeup.set()

    async def run(self) -> None:
        opts = self._state.opts
        failures = 0
        while True:
            now = time.monotonic()
            if self._closing and (now >= self._deadline or not (self._acks or self._nacks)):
                self._give_up()
                return
            flush_at = self._first_ack_at + opts.ack_flush_interval
            if not (
                self._nacks
                or (self._acks and (self._closing or len(self._acks) >= opts.ack_batch_size or now >= flush_at))
            ):
                await self._wait(flush_at - now if self._acks else None)
                continue
            acks = self._acks[: opts.ack_batch_size]
            del self._acks[: len(acks)]
            if self._acks:
                self._first_ack_at = now
            nack = self._nacks.popleft() if self._nacks else None
            ok = True
            if acks:
                ok = await self._deliver_acks(acks)
            if nack is not None:
                ok = await self._deliver_nack(nack) and ok
            if ok:
                failures = 0
                continue
            pause = opts.delivery_backoff.delay(failures)
            failures += 1
            if not self._closing or time.monotonic() + pause < self._deadline:
                await self._wait(pause)

    async def _wait(self, timeout: float | None) -> None:
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _give_up(self) -> None:
        acks, nacks = self._acks, list(self._nacks)
        self._acks, self._nacks = [], collections.deque()
        if acks or nacks:
            log.error(
                "worker %s: gave up delivering %d acks and %d nacks at shutdown",
                self._state.opts.worker_id,
                len(acks),
                len(nacks),
            )
        for _, done in (*acks, *nacks):
            done(Settled(Delivery.FAILED))

    async def _deliver_acks(self, items: list[tuple[str, Done]]) -> bool:
        """Sends one Ack; on a transient failure puts the tokens back first in line."""
        state, opts = self._state, self._state.opts
        tokens = [token for token, _ in items]
        try:
            response = await state.stub.Ack(
                worker_service_pb2.AckRequest(lease_tokens=tokens),
                timeout=opts.rpc_timeout,
                metadata=state.metadata or None,
            )
        except grpc.RpcError as err:
            code = status_code(err)
            if code in core.RETRYABLE_DELIVERY_CODES:
                log.warning("worker %s: Ack of %d tokens failed (%s); retrying", opts.worker_id, len(tokens), code)
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
        for token, _ in items:
            state.held.pop(token, None)
        state.released()
        for token, done in items:
            done(results[token])
        return True

    async def _deliver_nack(self, item: _Nack) -> bool:
        state, opts = self._state, self._state.opts
        request, done = item
        try:
            response = await state.stub.Nack(request, timeout=opts.rpc_timeout, metadata=state.metadata or None)
        except grpc.RpcError as err:
            code = status_code(err)
            if code in core.RETRYABLE_DELIVERY_CODES:
                log.warning("worker %s: Nack failed (%s); retrying", opts.worker_id, code)
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
        state.held.pop(request.lease_token, None)
        state.released()
        done(settled)
        return True
