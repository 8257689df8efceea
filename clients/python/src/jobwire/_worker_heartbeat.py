"""The threaded worker's heartbeat thread: one Heartbeat call for every held
token, due when the earliest lease has a third of its time gone. Its answer
extends the leases, and signals the handlers of cancelled or lost ones."""

from __future__ import annotations

import logging

import grpc

from . import _lease_book as book
from ._worker_lease import SharedState
from .errors import JobwireError
from .v1 import worker_service_pb2, worker_service_pb2_grpc

log = logging.getLogger("jobwire.worker")


class Heartbeater:
    def __init__(self, state: SharedState, stub: worker_service_pb2_grpc.WorkerServiceStub) -> None:
        self._state = state
        self._stub = stub
        self._stop = False

    def stop_locked(self) -> None:
        self._stop = True
        self._state.heartbeat_wakeup.notify_all()

    def run(self) -> None:
        state, opts = self._state, self._state.opts
        failures = 0
        while True:
            with state.lock:
                while True:
                    if self._stop:
                        return
                    live, wait = book.due_for_heartbeat(state.held.values())
                    if wait is not None and wait <= 0:
                        break
                    state.heartbeat_wakeup.wait(wait)
                tokens = [lease.token for lease in live]
                timeout = book.heartbeat_timeout(live, opts.rpc_timeout)
            try:
                response = self._stub.Heartbeat(
                    worker_service_pb2.HeartbeatRequest(lease_tokens=tokens), timeout=timeout
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
                with state.lock:
                    book.postpone(live, pause)
                continue
            failures = 0
            with state.lock:
                book.apply_heartbeat(state.held, tokens, response)
                state.released_locked()
