"""The bookkeeping of held leases and Lease-stream credit, shared by the
threaded and the asyncio worker. No locks here: the threaded worker calls it
under its lock, the asyncio worker from its one event loop.

What must stay true:
  * Jobs delivered but not finished (``busy``) plus the credit the current
    stream holds (``broker``) plus the credit owed to it and not yet sent
    (``owed``) equals ``concurrency`` once the stream has settled.
  * Owed credit is sent only once the broker holds less than half of
    ``concurrency``: above that it can fill every slot it knows is free, and
    a credit message per finished job costs both ends CPU at low rates.
  * A new stream opens with max_in_flight = concurrency, which grants that
    much credit again while jobs from the old stream may still be running;
    the overlap is recorded in ``excess`` and paid back by sending no credit
    for that many freed slots. Until then at most that many delivered jobs
    wait for a slot, and are heartbeated while they wait.
  * A token stays held (and so heartbeated) until its ack or nack has been
    answered, or its lease is known to be lost.
  * No credit is sent while the worker holds ``2 * concurrency`` tokens or
    more (running, waiting for a slot, or finished with the ack or nack not
    yet answered): acks have fallen behind (a slow or unreachable broker).
    The credit waits in ``owed`` and goes once answers release tokens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2

from . import _worker_core as core
from ._convert import duration_seconds, timestamp_seconds, to_datetime
from ._tracing import ConsumerSpan
from .model import job_fields
from .v1 import worker_service_pb2

log = logging.getLogger("jobwire.worker")

# Heartbeat when this share of a lease has passed: a 30s lease is extended
# every 10s, leaving two more tries before it expires.
HEARTBEAT_FRACTION = 1 / 3
# The shortest wait between heartbeats, however short the lease.
MIN_HEARTBEAT_INTERVAL = 0.05
# The shortest deadline a Heartbeat call gets, however close its leases are
# to expiring.
MIN_HEARTBEAT_TIMEOUT = 0.2
# The lease assumed when neither the job, the worker nor the broker says:
# the broker's documented default.
ASSUMED_LEASE = 30.0


@dataclass(eq=False)
class HeldLease:
    """A held lease token and what the runtime knows about it."""

    token: str
    leased: worker_service_pb2.LeasedJob
    expires_at: float  # wall clock, seconds since the epoch
    next_heartbeat: float  # monotonic
    #: Tells the handler to stop (sets its event; the asyncio worker also
    #: cancels its task). Called once, with the first reason.
    signal: Callable[[], None] = lambda: None
    cancel_reason: str | None = None
    started: bool = False  # the handler has been called
    finished: bool = False  # the handler is done and its slot freed
    lost: bool = False  # the broker said the lease is gone: send nothing more
    abandoned: bool = False  # shutdown gave up on it and nacked it
    #: The attempt's consumer span, once the handler has started.
    span: ConsumerSpan | None = field(default=None, repr=False)

    def cancel(self, reason: str) -> None:
        if self.cancel_reason is not None:
            return
        self.cancel_reason = reason
        self.signal()


def leased_job_fields(lease: HeldLease) -> dict[str, Any]:
    """A LeasedJob's Job fields: the job as delivered, with the lease's
    expiry as the broker gave it when the job itself does not carry one."""
    fields = job_fields(lease.leased.job)
    if fields["lease_expires_at"] is None and lease.leased.HasField("lease_expires_at"):
        fields["lease_expires_at"] = to_datetime(lease.leased.lease_expires_at)
    return fields


def new_lease(leased: worker_service_pb2.LeasedJob, worker_lease: duration_pb2.Duration | None) -> HeldLease:
    now_wall, now = time.time(), time.monotonic()
    expires_at = expiry(leased, now_wall, worker_lease)
    return HeldLease(
        token=leased.lease_token,
        leased=leased,
        expires_at=expires_at,
        next_heartbeat=now + heartbeat_interval(expires_at - now_wall),
    )


def expiry(leased: worker_service_pb2.LeasedJob, now_wall: float, worker_lease: duration_pb2.Duration | None) -> float:
    """When a freshly leased job's lease runs out, on the local wall clock.

    The broker's lease_expires_at is trusted unless it lies further out than
    the lease's own duration would allow from now, which guards against a
    broker clock running ahead of ours: heartbeating early is harmless,
    heartbeating late loses the job.
    """
    own = leased.job.lease_duration if leased.job.HasField("lease_duration") else None
    duration = own if own is not None else worker_lease
    bound = now_wall + duration_seconds(duration) if duration is not None else None
    if leased.HasField("lease_expires_at"):
        at = timestamp_seconds(leased.lease_expires_at)
        return min(at, bound) if bound is not None else at
    if bound is not None:
        return bound
    return now_wall + ASSUMED_LEASE


def heartbeat_interval(remaining: float) -> float:
    return max(MIN_HEARTBEAT_INTERVAL, remaining * HEARTBEAT_FRACTION)


def due_for_heartbeat(held: Iterable[HeldLease]) -> tuple[list[HeldLease], float | None]:
    """The live leases, and how long until the earliest is due (<= 0: now;
    None: there are none)."""
    live = [lease for lease in held if not lease.lost]
    if not live:
        return live, None
    return live, min(lease.next_heartbeat for lease in live) - time.monotonic()


def heartbeat_timeout(live: Iterable[HeldLease], rpc_timeout: float) -> float:
    """A heartbeat that answers after the shortest lease has run out is no
    use: give up on it then, and try again."""
    shortest = min(lease.expires_at for lease in live) - time.time()
    return max(MIN_HEARTBEAT_TIMEOUT, min(rpc_timeout, shortest))


def postpone(live: Iterable[HeldLease], pause: float) -> None:
    retry_at = time.monotonic() + pause
    for lease in live:
        lease.next_heartbeat = retry_at


def apply_heartbeat(
    held: dict[str, HeldLease], tokens: list[str], response: worker_service_pb2.HeartbeatResponse
) -> None:
    """Records new expiries, and signals the handlers of leases the broker
    reports lost or cancel-requested."""
    now_wall, now = time.time(), time.monotonic()
    for i, result in enumerate(response.results):
        token = result.lease_token or (tokens[i] if i < len(tokens) else "")
        lease = held.get(token)
        if lease is None:
            continue
        if result.lost:
            lease.lost = True
            lease.cancel(core.CANCEL_LOST)
            if lease.finished:
                # Its ack or nack may still be queued; the broker will refuse
                # it, so stop heartbeating it now.
                held.pop(token, None)
            log.warning("job %s: lease lost", lease.leased.job.id)
            continue
        if result.HasField("lease_expires_at"):
            lease.expires_at = timestamp_seconds(result.lease_expires_at)
        lease.next_heartbeat = now + heartbeat_interval(lease.expires_at - now_wall)
        if result.cancel_requested and lease.cancel_reason is None:
            log.info("job %s: cancellation requested", lease.leased.job.id)
            lease.cancel(core.CANCEL_REQUESTED)


def unfinished(held: Mapping[str, HeldLease]) -> list[HeldLease]:
    return [lease for lease in held.values() if not lease.finished and not lease.lost and not lease.abandoned]


class CreditLedger:
    """Lease-stream credit: see the module doc for what must stay true."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.busy = 0  # delivered and not yet finished
        self.excess = 0  # credit granted twice by a reopened stream, to pay back
        self.broker = 0  # credit the current stream holds
        self.owed = 0  # freed slots not yet sent as credit
        self.open = False  # a stream is open that credit can be sent on

    def stream_opened(self) -> None:
        # The new stream grants `concurrency` credit on top of the slots
        # still busy with earlier streams' jobs.
        self.excess = self.busy
        self.broker = self.concurrency
        self.owed = 0
        self.open = True

    def stream_closed(self) -> None:
        self.open = False

    def accepted(self) -> None:
        self.busy += 1

    def received(self, n: int, held: int) -> int:
        """The broker sent n jobs; ``held`` is how many tokens the worker
        holds. Returns the credit to send now (0: none)."""
        self.broker -= n
        return self._flush(held)

    def freed(self, held: int) -> int:
        """A slot was freed; returns the credit to send now (0: none)."""
        self.busy -= 1
        if self.excess > 0:
            self.excess -= 1
            return 0
        self.owed += 1
        return self._flush(held)

    def released(self, held: int) -> int:
        """An owed ack or nack was answered and its token let go: returns the
        credit held back while acks lagged that may go now (0: none)."""
        return self._flush(held)

    def _flush(self, held: int) -> int:
        if self.owed == 0 or self.broker * 2 >= self.concurrency or not self.open:
            return 0
        # Finished jobs whose acks are not yet answered count too: credit for
        # new jobs waits while the held tokens are twice the slots (acks fell
        # behind: a slow or unreachable broker). Without this bound a worker
        # whose handlers outran its acks kept taking jobs, every one of them
        # heartbeated with its lease running; the TypeScript worker held
        # ~90,000 so.
        if held >= 2 * self.concurrency:
            return 0
        n, self.owed = self.owed, 0
        self.broker += n
        return n
