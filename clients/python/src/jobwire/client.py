"""Client: enqueue jobs, look them up, cancel and replay them, and manage
queues. Every call returns the dataclasses of jobwire.model, never a raw
protobuf message."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from . import _requests, _tracing
from ._convert import DurationLike
from ._requests import DEFAULT_QUEUE, UNSET, SpecLike, _Unset, job_spec
from ._rpc import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    TLS,
    ChannelOptions,
    call_with_retry,
    check_token,
    make_channel,
    with_token,
)
from .model import (
    EnqueueResult,
    Identity,
    Job,
    QueueConfig,
    QueueHistory,
    QueueStats,
    RateLimit,
    ReplayResult,
    RetryPolicy,
    WorkerStream,
)
from .v1 import admin_service_pb2, admin_service_pb2_grpc, job_pb2, job_service_pb2, job_service_pb2_grpc

__all__ = ["Client", "JobPages", "job_spec"]

R = TypeVar("R")


class Client:
    """A connection to a jobwire broker for producers and operators.

    ``address`` is ``host:port``, reached over plaintext HTTP/2, or over TLS
    with ``tls=jobwire.TLS(...)``.
    Every call has a deadline (``timeout`` seconds, retries included; a call
    can pass its own) and is retried after UNAVAILABLE with jittered backoff.
    Other failures raise JobwireError, whose ``code`` is the gRPC status.

    Enqueue retries too, so a request the broker received just before the
    connection failed can be enqueued twice; give an ``idempotency_key`` when
    that matters. Thread-safe; close it (or use ``with``) when done. For
    asyncio code, ``jobwire.aio.Client`` has the same methods as coroutines.

    ``token`` is sent as ``authorization: Bearer <token>`` on every call, for
    a broker started with JOBWIRE_AUTH_TOKENS or a tokens file
    (JOBWIRE_AUTH_FILE). It applies to a ``channel`` passed in as well (the
    client wraps it, and leaves the caller's channel unchanged), and to
    calls made through the ``channel`` property. A call without a known
    token raises JobwireError(UNAUTHENTICATED); one outside the token's
    scopes or queues, JobwireError(PERMISSION_DENIED) naming what it lacked.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        channel: grpc.Channel | None = None,
        channel_options: ChannelOptions | None = None,
        tls: TLS | None = None,
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
        self._channel = channel if channel is not None else make_channel(address, channel_options, tls)
        if token is not None:
            self._channel = with_token(self._channel, token)
        self._jobs = job_service_pb2_grpc.JobServiceStub(self._channel)
        self._admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        if self._own_channel:
            self._channel.close()

    def __enter__(self) -> Client:
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
        lease_duration, retry, idempotency_key, idempotency_ttl,
        concurrency_key, ordering_key.
        """
        spec = job_spec(type, payload, queue=queue, **opts)
        return self._enqueue([spec], timeout)[0]

    def enqueue_many(self, jobs: Iterable[SpecLike], *, timeout: float | None = None) -> list[EnqueueResult]:
        """Enqueues a batch, all or nothing; results are in the same order.

        Each item is a JobSpec or a mapping of ``job_spec`` arguments, e.g.
        ``{"type": "greet", "payload": {...}, "queue": "mail"}``.
        """
        specs = [_requests.as_spec(item) for item in jobs]
        if not specs:
            return []
        return self._enqueue(specs, timeout)

    def _enqueue(self, specs: list[job_pb2.JobSpec], timeout: float | None) -> list[EnqueueResult]:
        spans = _tracing.start_producer_spans(specs)
        try:
            response = self._call("Enqueue", self._jobs.Enqueue, job_service_pb2.EnqueueRequest(jobs=specs), timeout)
            results = _requests.enqueue_results(response, len(specs))
        except BaseException as err:
            _tracing.fail_producer_spans(spans, err)
            raise
        _tracing.end_producer_spans(spans, results)
        return results

    # -- jobs ------------------------------------------------------------------

    def get_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job with its state, attempts and error history."""
        response = self._call("GetJob", self._jobs.GetJob, job_service_pb2.GetJobRequest(id=job_id), timeout)
        return Job.from_proto(response.job)

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Cancels a waiting job at once; on a RUNNING job, asks its worker to
        stop (the job comes back RUNNING with cancel_requested set). A
        completed or dead job raises JobwireError(FAILED_PRECONDITION)."""
        request = job_service_pb2.CancelJobRequest(id=job_id)
        return Job.from_proto(self._call("CancelJob", self._jobs.CancelJob, request, timeout).job)

    def list_jobs(
        self,
        *,
        queue: str = "",
        type: str = "",
        states: Iterable[int] = (),
        error_contains: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> JobPages:
        """The jobs matching the filters, newest first, fetched a page at a
        time as the result is iterated (``page_size`` per call; the broker's
        default is 100). Each page is one call with its own ``timeout``.

            for job in client.list_jobs(queue="mail", states=[JobState.DEAD]):
                ...
        """
        request = _requests.list_jobs_request(
            queue=queue,
            type=type,
            states=states,
            error_contains=error_contains,
            page_size=page_size,
            page_token=page_token,
        )
        return JobPages(lambda r: self._call("ListJobs", self._admin.ListJobs, r, timeout), request)

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
    ) -> ReplayResult:
        """Makes DEAD (and with include_cancelled, CANCELLED) jobs AVAILABLE
        again. Give either job ids or a filter, whose queue is required."""
        request = _requests.replay_request(
            job_ids,
            queue=queue,
            type=type,
            error_contains=error_contains,
            finished_after=finished_after,
            finished_before=finished_before,
            limit=limit,
            dry_run=dry_run,
            include_cancelled=include_cancelled,
        )
        return ReplayResult.from_proto(self._call("Replay", self._admin.Replay, request, timeout))

    # -- queues ------------------------------------------------------------------

    def get_queue_stats(self, queues: Sequence[str] = (), *, timeout: float | None = None) -> list[QueueStats]:
        """Counts per state, the oldest waiting job's age, and whether the
        queue is paused; for the given queues, or every queue."""
        request = admin_service_pb2.GetQueueStatsRequest(queues=list(queues))
        response = self._call("GetQueueStats", self._admin.GetQueueStats, request, timeout)
        return [QueueStats.from_proto(q) for q in response.queues]

    def get_queue_config(self, queue: str, *, timeout: float | None = None) -> QueueConfig:
        """The queue's whole config; a queue nobody configured has every
        setting None (the broker's defaults apply)."""
        request = admin_service_pb2.GetQueueConfigRequest(queue=queue)
        return QueueConfig.from_proto(self._call("GetQueueConfig", self._admin.GetQueueConfig, request, timeout).config)

    def set_queue_config(
        self,
        queue: str,
        *,
        retry: RetryPolicy | job_pb2.RetryPolicy | _Unset | None = UNSET,
        max_attempts: int | _Unset | None = UNSET,
        lease_duration: DurationLike | _Unset | None = UNSET,
        completed_retention: DurationLike | _Unset | None = UNSET,
        max_running: int | _Unset | None = UNSET,
        max_running_per_key: int | _Unset | None = UNSET,
        rate_limit: RateLimit | _Unset | None = UNSET,
        rate_limit_per_key: RateLimit | _Unset | None = UNSET,
        timeout: float | None = None,
    ) -> QueueConfig | None:
        """Changes some of a queue's settings and returns the whole config.

        Only the settings passed are sent: one passed with a value is set,
        one passed as None is cleared (back to the broker's default, through
        the request's update_mask), and the others keep their values.

            client.set_queue_config("mail", max_running=5)          # the rest stays
            client.set_queue_config("mail", max_running=None)       # unlimited again

        ``completed_retention`` is how long completed jobs stay as history;
        zero deletes each job when it is acked. Returns None only from a
        broker that predates answering with the config.
        """
        request = _requests.set_queue_config_request(
            queue,
            retry=retry,
            max_attempts=max_attempts,
            lease_duration=lease_duration,
            completed_retention=completed_retention,
            max_running=max_running,
            max_running_per_key=max_running_per_key,
            rate_limit=rate_limit,
            rate_limit_per_key=rate_limit_per_key,
        )
        response = self._call("SetQueueConfig", self._admin.SetQueueConfig, request, timeout)
        return QueueConfig.from_proto(response.config) if response.HasField("config") else None

    def pause_queue(self, queue: str, *, timeout: float | None = None) -> QueueConfig:
        """Stops every broker replica from leasing the queue's jobs, within a
        second. Enqueues still succeed and running jobs finish. Idempotent."""
        request = admin_service_pb2.PauseQueueRequest(queue=queue)
        return QueueConfig.from_proto(self._call("PauseQueue", self._admin.PauseQueue, request, timeout).config)

    def resume_queue(self, queue: str, *, timeout: float | None = None) -> QueueConfig:
        """Lets a paused queue's jobs be leased again. Idempotent."""
        request = admin_service_pb2.ResumeQueueRequest(queue=queue)
        return QueueConfig.from_proto(self._call("ResumeQueue", self._admin.ResumeQueue, request, timeout).config)

    def list_workers(self, queue: str = "", *, timeout: float | None = None) -> list[WorkerStream]:
        """The open Lease streams on every broker replica; only those leasing
        from ``queue`` when it is given."""
        request = admin_service_pb2.ListWorkersRequest(queue=queue)
        response = self._call("ListWorkers", self._admin.ListWorkers, request, timeout)
        return [WorkerStream.from_proto(w) for w in response.workers]

    def get_queue_history(self, queue: str = "", *, timeout: float | None = None) -> QueueHistory:
        """The broker replica's recent samples of ``queue`` (or of every
        queue): backlog and throughput over the last hour, oldest first."""
        request = admin_service_pb2.GetQueueHistoryRequest(queue=queue)
        return QueueHistory.from_proto(self._call("GetQueueHistory", self._admin.GetQueueHistory, request, timeout))

    # -- identity ------------------------------------------------------------------

    def who_am_i(self, *, timeout: float | None = None) -> Identity:
        """Who the broker takes this client for: its token's (or client
        certificate's) name, scopes and queues. Any authenticated caller may
        ask, so it is a cheap check of a deployment's credentials."""
        request = admin_service_pb2.WhoAmIRequest()
        return Identity.from_proto(self._call("WhoAmI", self._admin.WhoAmI, request, timeout))

    def _call(self, method: str, fn: Callable[..., R], request: Any, timeout: float | None) -> R:
        return call_with_retry(
            method,
            fn,
            request,
            timeout=self.timeout if timeout is None else timeout,
            max_retries=self.max_retries,
        )


class JobPages:
    """The result of list_jobs: iterate it for every matching job, or call
    ``pages()`` for one ListJobs response at a time. Nothing is fetched until
    it is iterated, and each iteration starts again from the first page."""

    def __init__(
        self,
        fetch: Callable[[admin_service_pb2.ListJobsRequest], admin_service_pb2.ListJobsResponse],
        request: admin_service_pb2.ListJobsRequest,
    ) -> None:
        self._fetch = fetch
        self._request = request
        #: After a page: the token that continues after it ("" on the last).
        self.next_page_token = ""

    def pages(self) -> Iterator[list[Job]]:
        request = admin_service_pb2.ListJobsRequest()
        request.CopyFrom(self._request)
        while True:
            response = self._fetch(request)
            self.next_page_token = response.next_page_token
            yield [Job.from_proto(j) for j in response.jobs]
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def __iter__(self) -> Iterator[Job]:
        for page in self.pages():
            yield from page
