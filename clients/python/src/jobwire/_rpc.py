"""The channel and the retry loop every unary call goes through."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence, Tuple, TypeVar

import grpc

from ._backoff import Backoff
from .errors import JobwireError

log = logging.getLogger("jobwire")

# The largest message either side may send or receive. A LeaseResponse can
# carry up to max_in_flight jobs of up to the broker's payload limit (1 MiB by
# default), and an Enqueue batch up to 1000 specs; 64 MiB covers ordinary use
# and can be raised through channel_options.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# How long one client call may take, retries included, unless the call says.
DEFAULT_TIMEOUT = 10.0
# How many times a call is retried after UNAVAILABLE; None means as often as
# its deadline allows, so that a call rides out a broker restart that fits in it.
DEFAULT_MAX_RETRIES: int | None = None
# Retry delays for UNAVAILABLE: 50ms, 100ms, ... up to 1s, with jitter.
DEFAULT_CALL_BACKOFF = Backoff(initial=0.05, maximum=1.0)
# The longest gRPC waits between attempts to reconnect to the broker. gRPC's
# default (120s) would leave a channel failing fast with the last
# "connection refused" for up to two minutes after the broker is back; one
# connection attempt a second costs nothing. Calls on every channel to the
# same address share this state (gRPC pools subchannels), clients and workers
# alike.
MAX_RECONNECT_BACKOFF_MS = 1000

ChannelOptions = Sequence[Tuple[str, object]]

T = TypeVar("T")


def make_channel(address: str, options: ChannelOptions | None = None) -> grpc.Channel:
    """A plaintext (h2c) channel to ``host:port``; the broker speaks no TLS."""
    merged: dict[str, object] = {
        "grpc.max_receive_message_length": DEFAULT_MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": DEFAULT_MAX_MESSAGE_BYTES,
        # Reconnect quickly after the broker restarts (the default minimum
        # is 20s), so a drained worker is back within a second or so.
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.min_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": MAX_RECONNECT_BACKOFF_MS,
        # The broker takes no service config from DNS.
        "grpc.service_config_disable_resolution": 1,
    }
    merged.update(dict(options or ()))
    return grpc.insecure_channel(address, options=list(merged.items()))


def call_with_retry(
    method: str,
    fn: Callable[..., T],
    request: object,
    *,
    timeout: float,
    max_retries: int | None = DEFAULT_MAX_RETRIES,
    backoff: Backoff = DEFAULT_CALL_BACKOFF,
    interrupt: threading.Event | None = None,
) -> T:
    """Calls ``fn(request, timeout=...)``, retrying UNAVAILABLE with backoff.

    ``timeout`` is the deadline for the whole call, retries included: each
    attempt gets what is left of it. Only UNAVAILABLE is retried: it means the
    broker could not be reached or is draining, so the request was not
    processed. Every other status is the broker's answer and is raised as a
    JobwireError at once.
    """
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        try:
            return fn(request, timeout=max(remaining, 0.001))
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            pause = backoff.delay(attempt)
            if (
                code is not grpc.StatusCode.UNAVAILABLE
                or (max_retries is not None and attempt >= max_retries)
                or time.monotonic() + pause >= deadline
            ):
                raise JobwireError.from_rpc_error(err, method) from err
            log.debug("%s: UNAVAILABLE (%s), retry %d in %.3fs", method, err.details(), attempt + 1, pause)
            attempt += 1
            if interrupt is not None:
                if interrupt.wait(pause):
                    raise JobwireError.from_rpc_error(err, method) from err
            else:
                time.sleep(pause)
