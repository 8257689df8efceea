"""The asyncio channel, and the retry loop every unary call goes through."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
import grpc.aio

from .._backoff import Backoff
from .._rpc import DEFAULT_CALL_BACKOFF, DEFAULT_MAX_RETRIES, TLS, ChannelOptions, bearer, channel_options, retry_pause
from ..errors import JobwireError

log = logging.getLogger("jobwire")

T = TypeVar("T")

Metadata = Sequence[tuple[str, str]]


def make_channel(address: str, options: ChannelOptions | None = None, tls: TLS | None = None) -> grpc.aio.Channel:
    """An asyncio channel to ``host:port`` (plaintext, or TLS when given),
    with the same settings as the threaded client's. Call it with the event
    loop running: an asyncio channel belongs to the loop it was made on."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=channel_options(options))
    return grpc.aio.secure_channel(
        address, tls.credentials(), options=[*tls.channel_options(), *channel_options(options)]
    )


def token_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata every call carries. (Per call rather than an interceptor,
    so that it applies to a channel the caller made too.)"""
    return (bearer(token),) if token is not None else ()


async def call_with_retry(
    method: str,
    fn: Callable[..., Awaitable[T]],
    request: object,
    *,
    timeout: float,
    metadata: Metadata = (),
    max_retries: int | None = DEFAULT_MAX_RETRIES,
    backoff: Backoff = DEFAULT_CALL_BACKOFF,
) -> T:
    """Awaits ``fn(request, timeout=..., metadata=...)``, retrying
    UNAVAILABLE with backoff as the threaded client does (see
    jobwire._rpc.retry_pause); the waits are asyncio.sleep, so the event loop
    runs on meanwhile. The final failure is raised as a JobwireError.
    """
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        try:
            return await fn(request, timeout=max(remaining, 0.001), metadata=metadata or None)
        except grpc.RpcError as err:
            pause = retry_pause(err, attempt, deadline, max_retries, backoff)
            if pause is None:
                raise JobwireError.from_rpc_error(err, method) from err
            log.debug("%s: UNAVAILABLE, retry %d in %.3fs", method, attempt + 1, pause)
            attempt += 1
            await asyncio.sleep(pause)
