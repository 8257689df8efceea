"""The channel, its bearer token, and the retry loop every unary call goes through."""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from ._backoff import Backoff
from .errors import JobwireError, status_code

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

ChannelOptions = Sequence[tuple[str, object]]

# What the broker accepts after "Bearer ": one run of visible ASCII. (gRPC
# refuses other characters in a text metadata value, and the broker's
# JOBWIRE_AUTH_TOKENS cannot hold whitespace.)
_TOKEN = re.compile(r"[\x21-\x7e]+")

T = TypeVar("T")


def channel_options(options: ChannelOptions | None = None) -> list[tuple[str, object]]:
    """jobwire's channel settings, with the caller's on top; the same for the
    threaded and the asyncio channel."""
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
    return list(merged.items())


PemSource = bytes | str | os.PathLike[str]


@dataclass(frozen=True)
class TLS:
    """Connect over TLS, and with a client certificate for mutual TLS.

    Each of ``ca``, ``cert`` and ``key`` is either the PEM itself, as
    ``bytes``, or the path of a PEM file, as a ``str`` or ``pathlib.Path``
    (any ``os.PathLike``). A ``str`` is always a path: PEM text in a ``str``
    is refused with a hint to ``.encode()`` it, rather than guessed at.
    Files are read once, here, so that a missing or unreadable one fails at
    ``TLS(...)`` and not at the first call; a new ``TLS`` rereads them (after
    a certificate rotation, say).

    ``ca`` is the certificate authority to trust (None: the system's roots);
    ``cert`` and ``key`` are the client's certificate chain and private key,
    given together, for a broker that requires client certificates
    (JOBWIRE_TLS_CLIENT_CA). ``server_name`` overrides the name the broker's
    certificate must carry, for an address whose host is not in it.

        jobwire.Client("broker.internal:50051", tls=jobwire.TLS(ca="ca.pem"))
        jobwire.Client("broker.internal:50051", tls=jobwire.TLS(ca=ca_pem_bytes))
    """

    ca: PemSource | None = None
    cert: PemSource | None = None
    key: PemSource | None = field(default=None, repr=False)
    server_name: str | None = None
    _pem: tuple[bytes | None, bytes | None, bytes | None] = field(
        default=(None, None, None), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: give cert and key together (or neither)")
        pem = (_read_pem("ca", self.ca), _read_pem("cert", self.cert), _read_pem("key", self.key))
        object.__setattr__(self, "_pem", pem)

    def credentials(self) -> grpc.ChannelCredentials:
        ca, cert, key = self._pem
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel_options(self) -> list[tuple[str, object]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def _read_pem(what: str, value: PemSource | None) -> bytes | None:
    """The PEM bytes of a TLS option: bytes as given, a str or path read
    from its file. Either way it must be PEM, which catches a DER file and a
    path passed as bytes (b"ca.pem") here instead of as a handshake failure."""
    if value is None:
        return None
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, (str, os.PathLike)):
        if isinstance(value, str) and "-----BEGIN" in value:
            raise ValueError(f"TLS {what}: a str is a file path; pass PEM text as bytes (pem.encode())")
        try:
            with open(value, "rb") as f:
                data = f.read()
        except OSError as err:
            raise ValueError(f"TLS {what}: cannot read {os.fspath(value)!r}: {err.strerror or err}") from err
    else:
        raise TypeError(f"TLS {what}: expected PEM bytes or a file path, got {type(value).__name__}")
    if b"-----BEGIN" not in data:
        raise ValueError(f"TLS {what}: not PEM (no -----BEGIN line)")
    return data


def make_channel(address: str, options: ChannelOptions | None = None, tls: TLS | None = None) -> grpc.Channel:
    """A channel to ``host:port``: plaintext HTTP/2 (h2c), or TLS when given."""
    if tls is None:
        return grpc.insecure_channel(address, options=channel_options(options))
    return grpc.secure_channel(address, tls.credentials(), options=[*tls.channel_options(), *channel_options(options)])


def bearer(token: str) -> tuple[str, str]:
    """The metadata entry that carries a token."""
    return ("authorization", f"Bearer {token}")


def with_token(channel: grpc.Channel, token: str) -> grpc.Channel:
    """``channel`` with ``authorization: Bearer <token>`` added to every call
    made through it: unary and streaming, the Lease stream included.

    Closing the returned channel closes ``channel``.
    """
    check_token(token)
    return grpc.intercept_channel(channel, _BearerToken(token))


def check_token(token: str) -> None:
    """Raises ValueError for a token the broker could never accept."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ValueError("token must be a non-empty string of visible ASCII characters without spaces")


_Continuation = Callable[[grpc.ClientCallDetails, Any], Any]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Appends the authorization metadata to each call's own."""

    def __init__(self, token: str) -> None:
        self._header = bearer(token)

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            (*(details.metadata or ()), self._header),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: _Continuation, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: _Continuation, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: _Continuation, details: grpc.ClientCallDetails, requests: Any
    ) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(
        self, continuation: _Continuation, details: grpc.ClientCallDetails, requests: Any
    ) -> Any:
        return continuation(self._details(details), requests)


def retry_pause(
    err: grpc.RpcError, attempt: int, deadline: float, max_retries: int | None, backoff: Backoff
) -> float | None:
    """How long to wait before retrying a failed unary call, or None to give up.

    Only UNAVAILABLE is retried: it means the broker could not be reached or
    is draining, so the request was not processed. Every other status is the
    broker's answer. A retry that could not start before the deadline is not
    worth waiting for.
    """
    if status_code(err) is not grpc.StatusCode.UNAVAILABLE:
        return None
    if max_retries is not None and attempt >= max_retries:
        return None
    pause = backoff.delay(attempt)
    if time.monotonic() + pause >= deadline:
        return None
    return pause


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
    """Calls ``fn(request, timeout=...)``, retrying UNAVAILABLE with backoff
    (see retry_pause), and raises the final failure as a JobwireError.

    ``timeout`` is the deadline for the whole call, retries included: each
    attempt gets what is left of it.
    """
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        try:
            return fn(request, timeout=max(remaining, 0.001))
        except grpc.RpcError as err:
            pause = retry_pause(err, attempt, deadline, max_retries, backoff)
            if pause is None:
                raise JobwireError.from_rpc_error(err, method) from err
            log.debug("%s: UNAVAILABLE, retry %d in %.3fs", method, attempt + 1, pause)
            attempt += 1
            if interrupt is not None:
                if interrupt.wait(pause):
                    raise JobwireError.from_rpc_error(err, method) from err
            else:
                time.sleep(pause)
