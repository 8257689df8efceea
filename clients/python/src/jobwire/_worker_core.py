"""What the threaded and the asyncio worker share: their options and
defaults, the Lease stream's opening, and how a handler's result becomes an
ack or a nack and then a span outcome. Nothing here blocks or awaits."""

from __future__ import annotations

import enum
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2

from . import _tracing
from ._backoff import Backoff
from ._convert import DurationLike, to_duration
from ._rpc import check_token
from .errors import PermanentError
from .v1 import job_pb2, worker_service_pb2

# The most jobs a worker runs at once.
DEFAULT_CONCURRENCY = 10
# How long shutdown waits for running handlers before giving up on them.
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
# How long a finished job's ack may wait for others to share its Ack call.
# 20ms delays no job's start (a slot frees when the handler returns) and,
# under load, turns hundreds of calls a second into a few dozen; each call
# costs both ends a whole RPC.
DEFAULT_ACK_FLUSH_INTERVAL = 0.02
# The most tokens in one Ack call.
DEFAULT_ACK_BATCH_SIZE = 500
# Deadline of each Ack, Nack and Heartbeat call.
DEFAULT_RPC_TIMEOUT = 5.0
# Delays before reopening a broken Lease stream: 100ms doubling to 10s, jittered.
DEFAULT_RECONNECT_BACKOFF = Backoff(initial=0.1, maximum=10.0)
# Delays before retrying a failed Ack, Nack or Heartbeat: 50ms doubling to 1s.
# Short, because leases are ticking while they fail.
DEFAULT_DELIVERY_BACKOFF = Backoff(initial=0.05, maximum=1.0)
# How long, after half-closing the Lease stream at shutdown, the broker has to
# end it before the worker cancels the call.
HALF_CLOSE_GRACE = 5.0
# How long shutdown keeps trying to deliver owed acks and nacks once the
# handlers are done (or given up on).
FLUSH_TIMEOUT = 10.0
# The broker keeps at most 64 KiB of a nack's error message.
MAX_ERROR_BYTES = 64 * 1024

# Lease stream statuses that reconnecting cannot fix: run() stops and raises.
FATAL_STREAM_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
# Ack, Nack and Heartbeat statuses worth retrying: the call did not get
# through, or the broker asked for patience. Anything else is its answer.
RETRYABLE_DELIVERY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

# Why a job's cancellation was signalled (LeasedJob.cancel_reason).
CANCEL_REQUESTED = "cancel_requested"  # CancelJob was called
CANCEL_LOST = "lost"  # the lease expired or was taken over
CANCEL_SHUTDOWN = "shutdown"  # the worker stopped before the handler finished


@dataclass(frozen=True)
class WorkerOptions:
    """A worker's settings, validated once at construction."""

    queues: tuple[str, ...]
    concurrency: int
    worker_id: str
    lease_duration: duration_pb2.Duration | None
    shutdown_timeout: float
    ack_flush_interval: float
    ack_batch_size: int
    rpc_timeout: float
    reconnect_backoff: Backoff
    delivery_backoff: Backoff
    install_signal_handlers: bool

    @classmethod
    def build(
        cls,
        queues: Sequence[str] | str,
        concurrency: int,
        *,
        worker_id: str | None,
        lease_duration: DurationLike | None,
        shutdown_timeout: float,
        install_signal_handlers: bool,
        ack_flush_interval: float,
        ack_batch_size: int,
        rpc_timeout: float,
        reconnect_backoff: Backoff,
        token: str | None,
    ) -> WorkerOptions:
        if isinstance(queues, str):
            queues = [queues]
        if not queues or not all(isinstance(q, str) and q for q in queues):
            raise ValueError("queues must be one or more non-empty queue names")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        if shutdown_timeout < 0 or ack_flush_interval < 0 or rpc_timeout <= 0 or ack_batch_size < 1:
            raise ValueError("shutdown_timeout and ack_flush_interval must be >= 0, rpc_timeout and ack_batch_size > 0")
        if token is not None:
            check_token(token)
        return cls(
            queues=tuple(queues),
            concurrency=concurrency,
            worker_id=(worker_id or default_worker_id())[:255],
            lease_duration=to_duration(lease_duration) if lease_duration is not None else None,
            shutdown_timeout=shutdown_timeout,
            ack_flush_interval=ack_flush_interval,
            ack_batch_size=ack_batch_size,
            rpc_timeout=rpc_timeout,
            reconnect_backoff=reconnect_backoff,
            delivery_backoff=DEFAULT_DELIVERY_BACKOFF,
            install_signal_handlers=install_signal_handlers,
        )

    def open_request(self) -> worker_service_pb2.LeaseRequest:
        """The first message of every Lease stream."""
        return worker_service_pb2.LeaseRequest(
            open=worker_service_pb2.LeaseOpen(
                queues=self.queues,
                worker_id=self.worker_id,
                max_in_flight=self.concurrency,
                lease_duration=self.lease_duration,
            )
        )


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def credit_request(count: int) -> worker_service_pb2.LeaseRequest:
    return worker_service_pb2.LeaseRequest(credit=worker_service_pb2.LeaseCredit(count=count))


def no_handler(job_type: str, worker_id: str, known: Sequence[str]) -> PermanentError:
    names = ", ".join(sorted(known)) or "none"
    return PermanentError(f"no handler for job type {job_type!r} on worker {worker_id} (it handles: {names})")


def error_message(err: BaseException, permanent: bool) -> str:
    """The text kept in the job's error history: a PermanentError's own
    message, else "Type: message"; cut to the broker's 64 KiB."""
    text = str(err)
    message = text if permanent and text else (f"{type(err).__name__}: {text}" if text else type(err).__name__)
    data = message.encode("utf-8")
    if len(data) > MAX_ERROR_BYTES:
        message = data[: MAX_ERROR_BYTES - 3].decode("utf-8", "ignore") + "..."
    return message


def failure_nack(token: str, failure: BaseException, permanent: bool) -> worker_service_pb2.NackRequest:
    return worker_service_pb2.NackRequest(
        lease_token=token, error=error_message(failure, permanent), permanent=permanent
    )


def shutdown_nack(token: str, worker_id: str) -> worker_service_pb2.NackRequest:
    """The nack for a job still running when shutdown gave up on it: an
    immediate retry, elsewhere."""
    return worker_service_pb2.NackRequest(
        lease_token=token,
        error=f"worker {worker_id} shut down before the handler finished",
        retry_after=to_duration(0),
    )


class ShutdownAbandoned(Exception):
    """Recorded on the span of an attempt that shutdown gave up on."""


# -- outcomes ----------------------------------------------------------------------


class Delivery(enum.Enum):
    """What became of an ack or a nack."""

    ACCEPTED = "accepted"
    LEASE_LOST = "lease_lost"  # the broker refused the token as stale
    FAILED = "failed"  # refused for another reason, or never got through


@dataclass(frozen=True)
class Settled:
    delivery: Delivery
    #: For an accepted nack: the state the broker moved the job to.
    state: int = job_pb2.JOB_STATE_UNSPECIFIED


def ack_outcome(settled: Settled) -> str:
    if settled.delivery is Delivery.ACCEPTED:
        return _tracing.OUTCOME_COMPLETED
    if settled.delivery is Delivery.LEASE_LOST:
        return _tracing.OUTCOME_LEASE_LOST
    return _tracing.OUTCOME_REPORT_FAILED


def nack_outcome(settled: Settled, *, cancel_requested: bool, permanent: bool) -> str:
    if settled.delivery is Delivery.LEASE_LOST:
        return _tracing.OUTCOME_LEASE_LOST
    if settled.delivery is Delivery.FAILED:
        return _tracing.OUTCOME_REPORT_FAILED
    if settled.state == job_pb2.JOB_STATE_CANCELLED:
        return _tracing.OUTCOME_CANCELLED
    if settled.state == job_pb2.JOB_STATE_DEAD:
        return _tracing.OUTCOME_DEAD
    if settled.state != job_pb2.JOB_STATE_UNSPECIFIED:
        return _tracing.OUTCOME_RETRY
    # A broker that did not say: judge by what was asked.
    if cancel_requested:
        return _tracing.OUTCOME_CANCELLED
    return _tracing.OUTCOME_DEAD if permanent else _tracing.OUTCOME_RETRY
