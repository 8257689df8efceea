"""Building requests from keyword arguments, shared by the threaded and the
asyncio client so that both accept exactly the same options."""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from . import _payload
from ._convert import DurationLike, to_duration, to_timestamp
from .errors import JobwireError
from .model import EnqueueResult, JobState, RateLimit, RetryPolicy
from .v1 import admin_service_pb2, job_pb2, job_service_pb2

DEFAULT_QUEUE = "default"

SpecLike = job_pb2.JobSpec | Mapping[str, Any]


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
    concurrency_key: str | None = None,
    ordering_key: str | None = None,
) -> job_pb2.JobSpec:
    """Builds a JobSpec. ``payload`` is JSON-encoded unless it is bytes.

    Durations are seconds (int or float) or timedeltas; ``run_at`` is a
    datetime (naive means UTC). Give at most one of ``run_at`` and ``delay``.

    ``concurrency_key`` groups jobs of a queue for the queue's
    ``max_running_per_key`` and ``rate_limit_per_key`` (e.g. "tenant:42");
    ``ordering_key`` makes jobs of a queue that share it run one at a time,
    in enqueue order.
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
    if concurrency_key:
        spec.concurrency_key = concurrency_key
    if ordering_key:
        spec.ordering_key = ordering_key
    return spec


def as_spec(item: SpecLike) -> job_pb2.JobSpec:
    """A JobSpec from a JobSpec (copied: trace headers are added to it, and
    the caller's stays as given) or a mapping of job_spec arguments."""
    if isinstance(item, job_pb2.JobSpec):
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


def enqueue_results(response: job_service_pb2.EnqueueResponse, sent: int) -> list[EnqueueResult]:
    results = [EnqueueResult(r.job_id, r.duplicate) for r in response.results]
    if len(results) != sent:
        raise JobwireError(
            grpc.StatusCode.INTERNAL, f"broker answered {len(results)} results for {sent} jobs", "Enqueue"
        )
    return results


def replay_request(
    job_ids: Sequence[str] | None,
    *,
    queue: str | None,
    type: str | None,
    error_contains: str | None,
    finished_after: _dt.datetime | None,
    finished_before: _dt.datetime | None,
    limit: int,
    dry_run: bool,
    include_cancelled: bool,
) -> admin_service_pb2.ReplayRequest:
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
    return request


def list_jobs_request(
    *,
    queue: str,
    type: str,
    states: Iterable[int],
    error_contains: str,
    page_size: int,
    page_token: str,
) -> admin_service_pb2.ListJobsRequest:
    return admin_service_pb2.ListJobsRequest(
        queue=queue,
        type=type,
        states=[job_pb2.JobState.Name(JobState(s)) for s in states],
        error_contains=error_contains,
        page_size=page_size,
        page_token=page_token,
    )


class _Unset(enum.Enum):
    """The default of set_queue_config's arguments: "not passed", as opposed
    to None, which clears the field."""

    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET


def set_queue_config_request(
    queue: str,
    *,
    retry: RetryPolicy | job_pb2.RetryPolicy | _Unset | None,
    max_attempts: int | _Unset | None,
    lease_duration: DurationLike | _Unset | None,
    completed_retention: DurationLike | _Unset | None,
    max_running: int | _Unset | None,
    max_running_per_key: int | _Unset | None,
    rate_limit: RateLimit | _Unset | None,
    rate_limit_per_key: RateLimit | _Unset | None,
) -> admin_service_pb2.SetQueueConfigRequest:
    """A partial update: a field passed with a value is set, a field passed
    as None is cleared (back to the broker's default), and a field not passed
    is left as it is.

    Without any None, the request carries only the given fields and no
    update_mask, which the broker reads as "set these, keep the rest". With
    one, the request needs an update_mask, and then the mask must name every
    field that changes: the set ones as well as the cleared ones.
    """
    if not queue:
        raise ValueError("queue must not be empty")
    request = admin_service_pb2.SetQueueConfigRequest(queue=queue)
    touched: list[str] = []
    cleared = False

    def note(name: str, value: object) -> bool:
        nonlocal cleared
        if value is UNSET:
            return False
        touched.append(name)
        if value is None:
            cleared = True
            return False
        return True

    if note("retry", retry):
        assert isinstance(retry, (RetryPolicy, job_pb2.RetryPolicy))
        request.retry.CopyFrom(retry.to_proto() if isinstance(retry, RetryPolicy) else retry)
    if note("max_attempts", max_attempts):
        assert isinstance(max_attempts, int)
        request.max_attempts = max_attempts
    if note("lease_duration", lease_duration):
        assert not isinstance(lease_duration, _Unset) and lease_duration is not None
        request.lease_duration.CopyFrom(to_duration(lease_duration))
    if note("completed_retention", completed_retention):
        assert not isinstance(completed_retention, _Unset) and completed_retention is not None
        request.completed_retention.CopyFrom(to_duration(completed_retention))
    if note("max_running", max_running):
        assert isinstance(max_running, int)
        request.max_running = max_running
    if note("max_running_per_key", max_running_per_key):
        assert isinstance(max_running_per_key, int)
        request.max_running_per_key = max_running_per_key
    if note("rate_limit", rate_limit):
        assert isinstance(rate_limit, RateLimit)
        request.rate_limit.CopyFrom(rate_limit.to_proto())
    if note("rate_limit_per_key", rate_limit_per_key):
        assert isinstance(rate_limit_per_key, RateLimit)
        request.rate_limit_per_key.CopyFrom(rate_limit_per_key.to_proto())
    if not touched:
        raise ValueError("set_queue_config: pass at least one setting (None clears one)")
    if cleared:
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=touched))
    return request
