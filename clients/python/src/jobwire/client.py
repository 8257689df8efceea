"""Client: enqueue jobs, look them up, cancel and replay them."""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, Union

import grpc
from opentelemetry import trace

from . import _payload, _tracing
from ._convert import DurationLike, to_duration, to_timestamp
from ._rpc import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    ChannelOptions,
    call_with_retry,
    check_token,
    make_channel,
    with_token,
)
from .errors import JobwireError
from .v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)

DEFAULT_QUEUE = "default"


class JobState(enum.IntEnum):
    """Where a job is in its life; equal to the jobwire.v1.JobState numbers,
    so ``job.state == JobState.COMPLETED`` works on the protobuf Job."""

    UNSPECIFIED = job_pb2.JOB_STATE_UNSPECIFIED
    SCHEDULED = job_pb2.JOB_STATE_SCHEDULED
    AVAILABLE = job_pb2.JOB_STATE_AVAILABLE
    RUNNING = job_pb2.JOB_STATE_RUNNING
    RETRYABLE = job_pb2.JOB_STATE_RETRYABLE
    COMPLETED = job_pb2.JOB_STATE_COMPLETED
    DEAD = job_pb2.JOB_STATE_DEAD
    CANCELLED = job_pb2.JOB_STATE_CANCELLED

    @property
    def final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)


@dataclass(frozen=True)
class RetryPolicy:
    """The wait before a failed job's next attempt; unset fields use the
    queue's policy, then the broker's (initial 1s, max 1h, multiplier 2,
    jitter 0.2). Durations are seconds or timedeltas."""

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


@dataclass(frozen=True)
class EnqueueResult:
    """One enqueued job: its id, and whether its idempotency key matched a
    live job so that nothing new was created."""

    id: str
    duplicate: bool = False


def job_spec(
    type: str,
    payload: Any = None,
    *,
    queue: str = DEFAULT_QUEUE,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    run_at: _dt.datetime | None = None,
    delay: DurationLike | None = None,
    priority: int = 0,
    max_attempts: int | None = None,
    lease_duration: DurationLike | None = None,
    retry: RetryPolicy | job_pb2.RetryPolicy | None = None,
    idempotency_key: str | None = None,
    idempotency_ttl: DurationLike | None = None,
) -> job_pb2.JobSpec:
    """Builds a JobSpec. ``payload`` is JSON-encoded unless it is bytes.

    Durations are seconds (int or float) or timedeltas; ``run_at`` is a
    datetime (naive means UTC). Give at most one of ``run_at`` and ``delay``.
    """
    if not type:
        raise ValueError("job type must not be empty")
    if run_at is not None and delay is not None:
        raise ValueError("give at most one of run_at and delay")
    data, ctype = _payload.encode(payload, content_type)
    spec = job_pb2.JobSpec(queue=queue, type=type, payload=data, content_type=ctype, priority=priority)
    if headers:
        spec.headers.update(headers)
    if run_at is not None:
        spec.run_at.CopyFrom(to_timestamp(run_at))
    if delay is not None:
        spec.delay.CopyFrom(to_duration(delay))
    if max_attempts is not None:
        spec.max_attempts = max_attempts
    if lease_duration is not None:
        spec.lease_duration.CopyFrom(to_duration(lease_duration))
    if retry is not None:
        spec.retry.CopyFrom(retry.to_proto() if isinstance(retry, RetryPolicy) else retry)
    if idempotency_key:
        spec.idempotency_key = idempotency_key
    if idempotency_ttl is not None:
        spec.idempotency_ttl.CopyFrom(to_duration(idempotency_ttl))
    return spec


SpecLike = Union[job_pb2.JobSpec, Mapping[str, Any]]


class Client:
    """A connection to a jobwire broker for producers and operators.

    ``address`` is ``host:port``; the broker speaks gRPC over plaintext HTTP/2.
    Every call has a deadline (``timeout`` seconds, retries included; a call
    can pass its own) and is retried after UNAVAILABLE with jittered backoff.

    Enqueue retries too, so a request the broker received just before the
    connection failed can be enqueued twice; give an ``idempotency_key`` when
    that matters. Thread-safe; close it (or use ``with``) when done.

    ``token`` is sent as ``authorization: Bearer <token>`` on every call, for
    a broker started with JOBWIRE_AUTH_TOKENS. It applies to a ``channel``
    passed in as well (the client wraps it, and leaves the caller's channel
    unchanged), and to calls made through the ``channel`` property.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        channel: grpc.Channel | None = None,
        channel_options: ChannelOptions | None = None,
        token: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if token is not None:
            check_token(token)
        self.address = address
        self.timeout = timeout
        self.max_retries = max_retries
        self._own_channel = channel is None
        self._channel = channel if channel is not None else make_channel(address, channel_options)
        if token is not None:
            self._channel = with_token(self._channel, token)
        self._jobs = job_service_pb2_grpc.JobServiceStub(self._channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel, for calls this class does not wrap."""
        return self._channel

    # -- producing -----------------------------------------------------------

    def enqueue(
        self,
        type: str,
        payload: Any = None,
        *,
        queue: str = DEFAULT_QUEUE,
        timeout: float | None = None,
        **opts: Any,
    ) -> EnqueueResult:
        """Enqueues one job and returns its id.

        ``payload`` is JSON-encoded (content type application/json) unless it
        is bytes, which are sent untouched (application/octet-stream unless
        ``content_type`` is given). Other options are those of ``job_spec``:
        content_type, headers, run_at, delay, priority, max_attempts,
        lease_duration, retry, idempotency_key, idempotency_ttl.
        """
        spec = job_spec(type, payload, queue=queue, **opts)
        return self._enqueue([spec], timeout)[0]

    def enqueue_many(self, jobs: Iterable[SpecLike], *, timeout: float | None = None) -> list[EnqueueResult]:
        """Enqueues a batch, all or nothing; results are in the same order.

        Each item is a JobSpec or a mapping of ``job_spec`` arguments, e.g.
        ``{"type": "greet", "payload": {...}, "queue": "mail"}``.
        """
        specs = [_as_spec(item) for item in jobs]
        if not specs:
            return []
        return self._enqueue(specs, timeout)

    def _enqueue(self, specs: list[job_pb2.JobSpec], timeout: float | None) -> list[EnqueueResult]:
        tracer = _tracing.tracer()
        # One PRODUCER span per job, so that each job's consumer spans have
        # their own parent; they share the RPC's duration.
        spans = []
        for spec in specs:
            span = tracer.start_span(
                f"send {spec.queue}",
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    _tracing.MESSAGING_SYSTEM: _tracing.SYSTEM,
                    _tracing.MESSAGING_DESTINATION: spec.queue,
                    _tracing.MESSAGING_OPERATION_TYPE: "send",
                    _tracing.MESSAGING_OPERATION_NAME: "send",
                    _tracing.JOB_TYPE: spec.type,
                    **({_tracing.MESSAGING_BATCH_COUNT: len(specs)} if len(specs) > 1 else {}),
                },
            )
            headers: dict[str, str] = {}
            _tracing.inject(headers, span)
            spec.headers.update(headers)
            spans.append(span)
        try:
            response = self._call("Enqueue", self._jobs.Enqueue, job_service_pb2.EnqueueRequest(jobs=specs), timeout)
        except Exception as err:
            for span in spans:
                span.record_exception(err)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(err)))
                span.end()
            raise
        results = [EnqueueResult(r.job_id, r.duplicate) for r in response.results]
        if len(results) != len(specs):
            err = JobwireError(grpc.StatusCode.INTERNAL, f"broker answered {len(results)} results for {len(specs)} jobs", "Enqueue")
            for span in spans:
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(err)))
                span.end()
            raise err
        for span, result in zip(spans, results, strict=True):
            span.set_attribute(_tracing.MESSAGING_MESSAGE_ID, result.id)
            span.end()
        return results

    # -- looking up and managing ---------------------------------------------

    def get_job(self, job_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """The job with its state, attempts and error history."""
        return self._call("GetJob", self._jobs.GetJob, job_service_pb2.GetJobRequest(id=job_id), timeout).job

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> job_pb2.Job:
        """Cancels a waiting job at once; on a RUNNING job, asks its worker to
        stop (the job comes back RUNNING with cancel_requested set). A
        completed or dead job raises JobwireError(FAILED_PRECONDITION)."""
        request = job_service_pb2.CancelJobRequest(id=job_id)
        return self._call("CancelJob", self._jobs.CancelJob, request, timeout).job

    def replay(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        queue: str | None = None,
        type: str | None = None,
        error_contains: str | None = None,
        finished_after: _dt.datetime | None = None,
        finished_before: _dt.datetime | None = None,
        limit: int = 0,
        dry_run: bool = False,
        include_cancelled: bool = False,
        timeout: float | None = None,
    ) -> admin_service_pb2.ReplayResponse:
        """Makes DEAD (and with include_cancelled, CANCELLED) jobs AVAILABLE
        again. Give either job ids or a filter, whose queue is required."""
        request = admin_service_pb2.ReplayRequest(limit=limit, dry_run=dry_run, include_cancelled=include_cancelled)
        filtered = any(v is not None for v in (queue, type, error_contains, finished_after, finished_before))
        if job_ids and filtered:
            raise ValueError("give either job_ids or filter arguments, not both")
        if job_ids:
            request.job_ids.extend(job_ids)
        elif filtered:
            if not queue:
                raise ValueError("a replay filter needs a queue")
            request.filter.queue = queue
            if type:
                request.filter.type = type
            if error_contains:
                request.filter.error_contains = error_contains
            if finished_after is not None:
                request.filter.finished_after.CopyFrom(to_timestamp(finished_after))
            if finished_before is not None:
                request.filter.finished_before.CopyFrom(to_timestamp(finished_before))
        else:
            raise ValueError("give job_ids or a filter (queue=...)")
        return self._call("Replay", self._admin.Replay, request, timeout)

    def list_jobs(
        self,
        *,
        queue: str = "",
        type: str = "",
        states: Sequence[int] = (),
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> admin_service_pb2.ListJobsResponse:
        """One page of jobs, newest first."""
        request = admin_service_pb2.ListJobsRequest(
            queue=queue, type=type, states=list(states), page_size=page_size, page_token=page_token
        )
        return self._call("ListJobs", self._admin.ListJobs, request, timeout)

    def set_queue_config(
        self,
        queue: str,
        *,
        retry: RetryPolicy | job_pb2.RetryPolicy | None = None,
        max_attempts: int | None = None,
        lease_duration: DurationLike | None = None,
        completed_retention: DurationLike | None = None,
        timeout: float | None = None,
    ) -> None:
        """Sets a queue's defaults; what is left None keeps the broker's.

        ``completed_retention`` is how long completed jobs stay as history;
        zero deletes each job when it is acked.
        """
        request = admin_service_pb2.SetQueueConfigRequest(queue=queue)
        if retry is not None:
            request.retry.CopyFrom(retry.to_proto() if isinstance(retry, RetryPolicy) else retry)
        if max_attempts is not None:
            request.max_attempts = max_attempts
        if lease_duration is not None:
            request.lease_duration.CopyFrom(to_duration(lease_duration))
        if completed_retention is not None:
            request.completed_retention.CopyFrom(to_duration(completed_retention))
        self._call("SetQueueConfig", self._admin.SetQueueConfig, request, timeout)

    def _call(self, method: str, fn: Any, request: Any, timeout: float | None) -> Any:
        return call_with_retry(
            method,
            fn,
            request,
            timeout=self.timeout if timeout is None else timeout,
            max_retries=self.max_retries,
        )


def _as_spec(item: SpecLike) -> job_pb2.JobSpec:
    if isinstance(item, job_pb2.JobSpec):
        # Copied: trace headers are added to it, and the caller's stays as given.
        spec = job_pb2.JobSpec()
        spec.CopyFrom(item)
        return spec
    if isinstance(item, Mapping):
        args = dict(item)
        try:
            type_ = args.pop("type")
        except KeyError:
            raise ValueError("each job needs a 'type'") from None
        return job_spec(type_, args.pop("payload", None), **args)
    raise TypeError(f"expected a JobSpec or a mapping, got {type(item).__name__}")
