"""jobwire.aio.Client: the Client's calls as coroutines, on grpc.aio, for
asyncio programs (a FastAPI or aiohttp service enqueueing jobs, say).

Nothing here blocks the event loop: each call is awaited on an asyncio gRPC
channel, and the waits between retries are asyncio.sleep.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from .. import _requests, _tracing
from .._convert import DurationLike
from .._requests import DEFAULT_QUEUE, UNSET, SpecLike, _Unset, job_spec
from .._rpc import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, TLS, ChannelOptions, check_token
from ..model import (
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
from ..v1 import admin_service_pb2, admin_service_pb2_grpc, job_pb2, job_service_pb2, job_service_pb2_grpc
from ._rpc import call_with_retry, make_channel, token_metadata

__all__ = ["AsyncJobPages", "Client"]

R = TypeVar("R")


class Client:
    """A connection to a jobwire broker for asyncio producers and operators.

        async with jobwire.aio.Client("127.0.0.1:50051") as client:
            result = await client.enqueue("send_welcome", {"user_id": 42}, queue="mail")

    The same options and methods as ``jobwire.Client``, as coroutines; see
    there for deadlines, retries and tokens. The channel is made on first use,
    on the running event loop (a grpc.aio channel belongs to the loop it was
    made on), so the client may be built before the loop starts, as a
    module-level object in a FastAPI app. Use it from that one loop only.
    A ``channel`` passed in must be a ``grpc.aio.Channel``.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int | None = DEFAULT_MAX_RETRIES,
        channel: grpc.aio.Channel | None = None,
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
        self._channel = channel
        self._channel_options = channel_options
        self._tls = tls
        self._metadata = token_metadata(token)
        self._stubs: tuple[Any, Any] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def close(self) -> None:
        if self._own_channel and self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stubs = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel (made now if it was not yet), for calls this
        class does not wrap. Calls made on it carry no token."""
        return self._ensure()[0]

    def _ensure(self) -> tuple[grpc.aio.Channel, Any, Any]:
        if self._channel is None:
            self._channel = make_channel(self.address, self._channel_options, self._tls)
        if self._stubs is None:
            self._stubs = (
                job_service_pb2_grpc.JobServiceStub(self._channel),
                admin_service_pb2_grpc.AdminServiceStub(self._channel),
            )
        return self._channel, self._stubs[0], self._stubs[1]

    @property
    def _jobs(self) -> Any:
        return self._ensure()[1]

    @property
    def _admin(self) -> Any:
        return self._ensure()[2]

    # -- producing -----------------------------------------------------------

    async def enqueue(
        self,
        type: str,
        payload: Any = None,
        *,
        queue: str = DEFAULT_QUEUE,
        timeout: float | None = None,
        **opts: Any,
    ) -> EnqueueResult:
        """Enqueues one job and returns its id; the options are job_spec's."""
        spec = job_spec(type, payload, queue=queue, **opts)
        return (await self._enqueue([spec], timeout))[0]

    async def enqueue_many(self, jobs: Iterable[SpecLike], *, timeout: float | None = None) -> list[EnqueueResult]:
        """Enqueues a batch, all or nothing; results are in the same order."""
        specs = [_requests.as_spec(item) for item in jobs]
        if not specs:
            return []
        return await self._enqueue(specs, timeout)

    async def _enqueue(self, specs: list[job_pb2.JobSpec], timeout: float | None) -> list[EnqueueResult]:
        spans = _tracing.start_producer_spans(specs)
        try:
            request = job_service_pb2.EnqueueRequest(jobs=specs)
            response = await self._call("Enqueue", self._jobs.Enqueue, request, timeout)
            results = _requests.enqueue_results(response, len(specs))
        except BaseException as err:
            _tracing.fail_producer_spans(spans, err)
            raise
        _tracing.end_producer_spans(spans, results)
        return results

    # -- jobs ------------------------------------------------------------------

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        response = await self._call("GetJob", self._jobs.GetJob, job_service_pb2.GetJobRequest(id=job_id), timeout)
        return Job.from_proto(response.job)

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        request = job_service_pb2.CancelJobRequest(id=job_id)
        return Job.from_proto((await self._call("CancelJob", self._jobs.CancelJob, request, timeout)).job)

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
    ) -> AsyncJobPages:
        """The matching jobs, newest first, a page per call as it is iterated:

        async for job in client.list_jobs(queue="mail", states=[JobState.DEAD]):
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

        def fetch(r: admin_service_pb2.ListJobsRequest) -> Awaitable[admin_service_pb2.ListJobsResponse]:
            return self._call("ListJobs", self._admin.ListJobs, r, timeout)

        return AsyncJobPages(fetch, request)

    async def replay(
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
        return ReplayResult.from_proto(await self._call("Replay", self._admin.Replay, request, timeout))

    # -- queues ------------------------------------------------------------------

    async def get_queue_stats(self, queues: Sequence[str] = (), *, timeout: float | None = None) -> list[QueueStats]:
        request = admin_service_pb2.GetQueueStatsRequest(queues=list(queues))
        response = await self._call("GetQueueStats", self._admin.GetQueueStats, request, timeout)
        return [QueueStats.from_proto(q) for q in response.queues]

    async def get_queue_config(self, queue: str, *, timeout: float | None = None) -> QueueConfig:
        request = admin_service_pb2.GetQueueConfigRequest(queue=queue)
        response = await self._call("GetQueueConfig", self._admin.GetQueueConfig, request, timeout)
        return QueueConfig.from_proto(response.config)

    async def set_queue_config(
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
        """A partial update, as jobwire.Client.set_queue_config: a setting
        passed with a value is set, one passed as None is cleared, the others
        keep their values."""
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
        response = await self._call("SetQueueConfig", self._admin.SetQueueConfig, request, timeout)
        return QueueConfig.from_proto(response.config) if response.HasField("config") else None

    async def pause_queue(self, queue: str, *, timeout: float | None = None) -> QueueConfig:
        request = admin_service_pb2.PauseQueueRequest(queue=queue)
        return QueueConfig.from_proto((await self._call("PauseQueue", self._admin.PauseQueue, request, timeout)).config)

    async def resume_queue(self, queue: str, *, timeout: float | None = None) -> QueueConfig:
        request = admin_service_pb2.ResumeQueueRequest(queue=queue)
        response = await self._call("ResumeQueue", self._admin.ResumeQueue, request, timeout)
        return QueueConfig.from_proto(response.config)

    async def list_workers(self, queue: str = "", *, timeout: float | None = None) -> list[WorkerStream]:
        request = admin_service_pb2.ListWorkersRequest(queue=queue)
        response = await self._call("ListWorkers", self._admin.ListWorkers, request, timeout)
        return [WorkerStream.from_proto(w) for w in response.workers]

    async def get_queue_history(self, queue: str = "", *, timeout: float | None = None) -> QueueHistory:
        request = admin_service_pb2.GetQueueHistoryRequest(queue=queue)
        response = await self._call("GetQueueHistory", self._admin.GetQueueHistory, request, timeout)
        return QueueHistory.from_proto(response)

    # -- identity ------------------------------------------------------------------

    async def who_am_i(self, *, timeout: float | None = None) -> Identity:
        """Who the broker takes this client for (see jobwire.Client.who_am_i)."""
        response = await self._call("WhoAmI", self._admin.WhoAmI, admin_service_pb2.WhoAmIRequest(), timeout)
        return Identity.from_proto(response)

    async def _call(self, method: str, fn: Callable[..., Awaitable[R]], request: Any, timeout: float | None) -> R:
        return await call_with_retry(
            method,
            fn,
            request,
            timeout=self.timeout if timeout is None else timeout,
            metadata=self._metadata,
            max_retries=self.max_retries,
        )


class AsyncJobPages:
    """The result of list_jobs: ``async for`` it for every matching job, or
    over ``pages()`` for one page at a time. Nothing is fetched until it is
    iterated, and each iteration starts again from the first page."""

    def __init__(
        self,
        fetch: Callable[[admin_service_pb2.ListJobsRequest], Awaitable[admin_service_pb2.ListJobsResponse]],
        request: admin_service_pb2.ListJobsRequest,
    ) -> None:
        self._fetch = fetch
        self._request = request
        #: After a page: the token that continues after it ("" on the last).
        self.next_page_token = ""

    async def pages(self) -> AsyncIterator[list[Job]]:
        request = admin_service_pb2.ListJobsRequest()
        request.CopyFrom(self._request)
        while True:
            response = await self._fetch(request)
            self.next_page_token = response.next_page_token
            yield [Job.from_proto(j) for j in response.jobs]
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def __aiter__(self) -> AsyncIterator[Job]:
        async for page in self.pages():
            for job in page:
                yield job
