"""The asyncio worker's heartbeat task: one Heartbeat call for every held
token, due when the earliest lease has a third of its time gone (as in
jobwire/_worker_heartbeat.py, the threaded one)."""

from __future__ import annotations

import asyncio
import logging

import grpc

from .. import _lease_book as book
from ..errors import JobwireError
from ..v1 import worker_service_pb2
from ._worker_lease import SharedState

log = logging.getLogger("jobwire.worker")


class Heartbeater:
    def __init__(self, state: SharedState) -> None:
        self._state = state
        self._stop = False

    def stop(self) -> None:
        self._stop = True
        self._state.heartbeat_wakeup.set()

    async def run(self) -> None:
        state, opts = self._state, self._state.opts
        failures = 0
        while True:
            while True:
                if self._stop:
                    return
                live, wait = book.due_for_heartbeat(state.held.values())
                if wait is not None and wait <= 0:
                    break
                state.heartbeat_wakeup.clear()
                try:
                    await asyncio.wait_for(state.heartbeat_wakeup.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            tokens = [lease.token for lease in live]
            try:
                response = await state.stub.Heartbeat(
                    worker_service_pb2.HeartbeatRequest(lease_tokens=tokens),
                    timeout=book.heartbeat_timeout(live, opts.rpc_timeout),
                    metadata=state.metadata or None,
                )
            except grpc.RpcError as err:
                pause = opts.delivery_backoff.delay(failures)
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "worker %s: Heartbeat of %d leases failed (%s); retrying in %.2fs",
                    opts.worker_id,
                    len(tokens),
                    JobwireError.from_rpc_error(err, "Heartbeat"),
                    pause,
                )
                book.postpone(live, pause)
                continue
            failures = 0
            book.apply_heartbeat(state.held, tokens, response)
            state.released()
