"""Typed results: what the client's calls return, as dataclasses and enums
rather than protobuf messages.

Timestamps are aware UTC datetimes and durations timedeltas; a field the
broker left unset is None. Each class keeps the message it came from in
``proto`` (left out of repr and comparison) for fields added to the API
after this version.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2, message

from . import _payload
from ._convert import DurationLike, to_datetime, to_duration, to_timedelta
from .v1 import admin_service_pb2, job_pb2


class JobState(enum.IntEnum):
    """Where a job is in its life (docs/state-machine.md draws the moves).

    The values are the jobwire.v1.JobState numbers, so a state compares equal
    to the protobuf field; ``str()`` and f-strings give the name
    (``COMPLETED``), not the number.
    """

    UNSPECIFIED = job_pb2.JOB_STATE_UNSPECIFIED
    #: Waiting for a run_at in the future.
    SCHEDULED = job_pb2.JOB_STATE_SCHEDULED
    #: Due, and waiting for a worker with credit.
    AVAILABLE = job_pb2.JOB_STATE_AVAILABLE
    #: Leased to a worker.
    RUNNING = job_pb2.JOB_STATE_RUNNING
    #: Failed an attempt (or lost its lease) and waiting out its backoff.
    RETRYABLE = job_pb2.JOB_STATE_RETRYABLE
    #: Acked. Final.
    COMPLETED = job_pb2.JOB_STATE_COMPLETED
    #: Failed permanently or out of attempts. Final; Replay revives it.
    DEAD = job_pb2.JOB_STATE_DEAD
    #: Cancelled before it completed. Final; Replay can revive it.
    CANCELLED = job_pb2.JOB_STATE_CANCELLED

    @property
    def final(self) -> bool:
        """COMPLETED, DEAD or CANCELLED: nothing moves the job on by itself."""
        return self in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)

    def __repr__(self) -> str:
        return f"JobState.{self.name}"

    @classmethod
    def of(cls, value: int) -> JobState:
        """The state for a protobuf number; UNSPECIFIED for one this version
        does not know (a newer broker's)."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


@dataclass(frozen=True)
class RetryPolicy:
    """The wait before a failed job's next attempt; unset fields use the
    queue's policy, then the broker's (initial 1s, max 1h, multiplier 2,
    jitter 0.2). Durations are seconds or timedeltas; policies read back from
    the broker hold timedeltas."""

    initial_backoff: DurationLike | None = None
    max_backoff: DurationLike | None = None
    multiplier: float | None = None
    jitter: float | None = None

    def to_proto(self) -> job_pb2.RetryPolicy:
        out = job_pb2.RetryPolicy()
        if self.initial_backoff is not None:
            out.initial_backoff.CopyFrom(to_duration(self.initial_backoff))
        if self.max_backoff is not None:
            out.max_backoff.CopyFrom(to_duration(self.max_backoff))
        if self.multiplier is not None:
            out.multiplier = self.multiplier
        if self.jitter is not None:
            out.jitter = self.jitter
        return out

    @classmethod
    def from_proto(cls, p: job_pb2.RetryPolicy) -> RetryPolicy:
        return cls(
            initial_backoff=_opt_timedelta(p, "initial_backoff"),
            max_backoff=_opt_timedelta(p, "max_backoff"),
            multiplier=p.multiplier or None,
            jitter=p.jitter if p.HasField("jitter") else None,
        )


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` job starts in any window of ``period`` (seconds or a
    timedelta), across every broker replica. A job held back waits as
    AVAILABLE: it is not failed and no attempt is charged."""

    count: int
    period: DurationLike

    def to_proto(self) -> admin_service_pb2.RateLimit:
        return admin_service_pb2.RateLimit(count=self.count, period=to_duration(self.period))

    @classmethod
    def from_proto(cls, p: admin_service_pb2.RateLimit) -> RateLimit:
        return cls(count=p.count, period=to_timedelta(p.period))


@dataclass(frozen=True)
class EnqueueResult:
    """One enqueued job: its id, and whether its idempotency key matched a
    live job so that nothing new was created."""

    id: str
    duplicate: bool = False


@dataclass(frozen=True)
class JobError:
    """One failed attempt in a job's history."""

    attempt: int
    message: str
    at: _dt.datetime | None
    #: The worker that held the lease, when the broker knows it.
    worker_id: str = ""

    @classmethod
    def from_proto(cls, p: job_pb2.JobError) -> JobError:
        return cls(attempt=p.attempt, message=p.message, at=_opt_datetime(p, "at"), worker_id=p.worker_id)


@dataclass(frozen=True)
class Job:
    """A job as the broker holds it: what ``get_job``, ``cancel_job`` and
    ``list_jobs`` return, and the base of what a handler receives.

    ``payload`` is decoded on first use: JSON for a JSON content type (an
    empty payload is None), the raw bytes otherwise; undecodable JSON raises
    PayloadError. ``raw_payload`` is always the bytes.
    """

    id: str
    queue: str
    type: str
    state: JobState
    raw_payload: bytes = field(repr=False)
    content_type: str
    attempt: int
    max_attempts: int
    priority: int = 0
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    run_at: _dt.datetime | None = None
    created_at: _dt.datetime | None = None
    #: When the job reached COMPLETED, DEAD or CANCELLED.
    finished_at: _dt.datetime | None = None
    #: Every failed attempt the broker kept, oldest first.
    errors: tuple[JobError, ...] = ()
    #: Failed attempts left out of ``errors`` to keep the history bounded.
    errors_dropped: int = 0
    idempotency_key: str = ""
    concurrency_key: str = ""
    ordering_key: str = ""
    #: Set while RUNNING.
    lease_expires_at: _dt.datetime | None = None
    #: The lease duration the job asked for, if any.
    lease_duration: _dt.timedelta | None = None
    #: Set by CancelJob on a RUNNING job.
    cancel_requested: bool = False
    #: The worker holding the lease while RUNNING, afterwards the last one.
    worker_id: str = ""
    proto: job_pb2.Job = field(default_factory=job_pb2.Job, repr=False, compare=False)

    @functools.cached_property
    def payload(self) -> Any:
        return _payload.decode(self.raw_payload, self.content_type)

    @classmethod
    def from_proto(cls, p: job_pb2.Job) -> Job:
        return cls(**job_fields(p))


def job_fields(p: job_pb2.Job) -> dict[str, Any]:
    """Job's constructor arguments from a message, for Job and its subclasses."""
    return {
        "id": p.id,
        "queue": p.queue,
        "type": p.type,
        "state": JobState.of(p.state),
        "raw_payload": p.payload,
        "content_type": p.content_type,
        "attempt": p.attempt,
        "max_attempts": p.max_attempts,
        "priority": p.priority,
        "headers": dict(p.headers),
        "run_at": _opt_datetime(p, "run_at"),
        "created_at": _opt_datetime(p, "created_at"),
        "finished_at": _opt_datetime(p, "finished_at"),
        "errors": tuple(JobError.from_proto(e) for e in p.errors),
        "errors_dropped": p.errors_dropped,
        "idempotency_key": p.idempotency_key,
        "concurrency_key": p.concurrency_key,
        "ordering_key": p.ordering_key,
        "lease_expires_at": _opt_datetime(p, "lease_expires_at"),
        "lease_duration": _opt_timedelta(p, "lease_duration"),
        "cancel_requested": p.cancel_requested,
        "worker_id": p.worker_id,
        "proto": p,
    }


@dataclass(frozen=True)
class QueueStats:
    """How many of a queue's jobs are in each state, and whether it is paused."""

    queue: str
    scheduled: int = 0
    available: int = 0
    running: int = 0
    retryable: int = 0
    completed: int = 0
    dead: int = 0
    cancelled: int = 0
    #: How long the oldest AVAILABLE job has been due; zero when none waits.
    oldest_available_age: _dt.timedelta = _dt.timedelta(0)
    #: Set by pause_queue: no broker replica leases the queue's jobs.
    paused: bool = False

    @classmethod
    def from_proto(cls, p: admin_service_pb2.QueueStats) -> QueueStats:
        return cls(
            queue=p.queue,
            scheduled=p.scheduled,
            available=p.available,
            running=p.running,
            retryable=p.retryable,
            completed=p.completed,
            dead=p.dead,
            cancelled=p.cancelled,
            oldest_available_age=to_timedelta(p.oldest_available_age),
            paused=p.paused,
        )


@dataclass(frozen=True)
class QueueConfig:
    """A queue's settings; None means unset, so the broker's default applies."""

    queue: str
    retry: RetryPolicy | None = None
    max_attempts: int | None = None
    lease_duration: _dt.timedelta | None = None
    #: How long completed jobs stay as history; zero deletes them at ack.
    completed_retention: _dt.timedelta | None = None
    #: The most RUNNING jobs of the queue at once, across the fleet.
    max_running: int | None = None
    #: The most RUNNING jobs at once per concurrency_key.
    max_running_per_key: int | None = None
    rate_limit: RateLimit | None = None
    rate_limit_per_key: RateLimit | None = None
    #: Set by pause_queue, cleared by resume_queue.
    paused: bool = False
    #: The last change.
    updated_at: _dt.datetime | None = None
    proto: admin_service_pb2.QueueConfig = field(
        default_factory=admin_service_pb2.QueueConfig, repr=False, compare=False
    )

    @classmethod
    def from_proto(cls, p: admin_service_pb2.QueueConfig) -> QueueConfig:
        return cls(
            queue=p.queue,
            retry=RetryPolicy.from_proto(p.retry) if p.HasField("retry") else None,
            max_attempts=p.max_attempts if p.HasField("max_attempts") else None,
            lease_duration=_opt_timedelta(p, "lease_duration"),
            completed_retention=_opt_timedelta(p, "completed_retention"),
            max_running=p.max_running if p.HasField("max_running") else None,
            max_running_per_key=p.max_running_per_key if p.HasField("max_running_per_key") else None,
            rate_limit=RateLimit.from_proto(p.rate_limit) if p.HasField("rate_limit") else None,
            rate_limit_per_key=RateLimit.from_proto(p.rate_limit_per_key) if p.HasField("rate_limit_per_key") else None,
            paused=p.paused,
            updated_at=_opt_datetime(p, "updated_at"),
            proto=p,
        )


@dataclass(frozen=True)
class ReplayResult:
    """How many jobs Replay made AVAILABLE again (or would have, on a dry run)."""

    replayed: int
    job_ids: tuple[str, ...]

    @classmethod
    def from_proto(cls, p: admin_service_pb2.ReplayResponse) -> ReplayResult:
        return cls(replayed=p.replayed, job_ids=tuple(p.job_ids))


@dataclass(frozen=True)
class WorkerStream:
    """One open Lease stream, on any broker replica."""

    worker_id: str
    queues: tuple[str, ...]
    max_in_flight: int
    #: Jobs the broker may still send on the stream.
    credit: int
    #: Jobs sent on the stream whose credit has not come back yet.
    jobs_held: int
    connected_at: _dt.datetime | None
    #: The broker replica serving the stream.
    broker_id: str
    #: The worker's address as the broker sees it.
    peer: str

    @classmethod
    def from_proto(cls, p: admin_service_pb2.WorkerStream) -> WorkerStream:
        return cls(
            worker_id=p.worker_id,
            queues=tuple(p.queues),
            max_in_flight=p.max_in_flight,
            credit=p.credit,
            jobs_held=p.jobs_held,
            connected_at=_opt_datetime(p, "connected_at"),
            broker_id=p.broker_id,
            peer=p.peer,
        )


@dataclass(frozen=True)
class QueueSample:
    """One queue at one moment, with the counts of the interval that ended then."""

    at: _dt.datetime | None
    queue: str
    #: Jobs AVAILABLE at ``at``.
    available: int = 0
    #: Jobs SCHEDULED or RETRYABLE at ``at``.
    waiting: int = 0
    running: int = 0
    dead: int = 0
    #: Jobs enqueued, completed (acked) and failed (attempts) in the interval.
    enqueued: int = 0
    completed: int = 0
    failed: int = 0

    @classmethod
    def from_proto(cls, p: admin_service_pb2.QueueSample) -> QueueSample:
        return cls(
            at=_opt_datetime(p, "at"),
            queue=p.queue,
            available=p.available,
            waiting=p.waiting,
            running=p.running,
            dead=p.dead,
            enqueued=p.enqueued,
            completed=p.completed,
            failed=p.failed,
        )


@dataclass(frozen=True)
class QueueHistory:
    """What get_queue_history returns: the broker replica's recent samples of
    its queues (it samples every queue every ``interval``, 10 s today, and
    keeps the last hour of them), oldest first."""

    samples: tuple[QueueSample, ...]
    #: The time between two samples.
    interval: _dt.timedelta

    @classmethod
    def from_proto(cls, p: admin_service_pb2.GetQueueHistoryResponse) -> QueueHistory:
        return cls(
            samples=tuple(QueueSample.from_proto(s) for s in p.samples),
            interval=to_timedelta(p.interval),
        )


@dataclass(frozen=True)
class Identity:
    """The caller as the broker sees it (who_am_i): the name of its token or
    of the certificates entry its client certificate matched (never the
    secret), its scopes and the queue patterns it may touch. Without
    authentication on the broker, ``auth_enabled`` is False, ``name`` empty,
    and every scope and queue allowed."""

    auth_enabled: bool
    name: str
    #: Of "enqueue", "work", "read" and "admin".
    scopes: tuple[str, ...]
    #: Queue name patterns ("*" matches any run of characters; ["*"] is all).
    queues: tuple[str, ...]

    @classmethod
    def from_proto(cls, p: admin_service_pb2.WhoAmIResponse) -> Identity:
        return cls(auth_enabled=p.auth_enabled, name=p.name, scopes=tuple(p.scopes), queues=tuple(p.queues))


def _opt_datetime(msg: message.Message, name: str) -> _dt.datetime | None:
    return to_datetime(getattr(msg, name)) if msg.HasField(name) else None


def _opt_timedelta(msg: message.Message, name: str) -> _dt.timedelta | None:
    value = getattr(msg, name)
    return to_timedelta(value) if msg.HasField(name) and isinstance(value, duration_pb2.Duration) else None
