"""The errors jobwire raises, and the one a handler raises to give up on a job."""

from __future__ import annotations

import grpc


class JobwireError(Exception):
    """A call to the broker failed.

    ``code`` is the ``grpc.StatusCode`` the broker (or the transport)
    answered with, ``details`` the broker's message alone and ``method`` the
    RPC this client called ("Enqueue"). The text is the code's name in lower
    case, then the message, as the TypeScript and Go clients write it, so
    that a log line says what kind of failure it was without a lookup::

        permission_denied: token ci lacks scope admin (needed by AdminService.PauseQueue)

    (``code_name`` is the upper-case name, ``"PERMISSION_DENIED"``.) The
    original ``grpc.RpcError`` is kept as ``__cause__``.
    """

    def __init__(self, code: grpc.StatusCode, details: str, method: str = "") -> None:
        self.code = code
        self.details = details
        self.method = method
        text = code_text(code)
        super().__init__(f"{text}: {details}" if details else text)

    @property
    def code_name(self) -> str:
        """The code as gRPC spells it: ``"NOT_FOUND"``."""
        return self.code.name

    def __reduce__(self) -> tuple[type[JobwireError], tuple[grpc.StatusCode, str, str]]:
        # The constructor takes three arguments, not the one text Exception
        # would pickle: keep the error intact across processes.
        return (type(self), (self.code, self.details, self.method))

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError, method: str = "") -> JobwireError:
        """Wraps an error of grpc's sync or asyncio API (both have code() and
        details(); a bare RpcError from an interceptor may have neither)."""
        code_fn = getattr(err, "code", None)
        details_fn = getattr(err, "details", None)
        code = code_fn() if callable(code_fn) else None
        details = details_fn() if callable(details_fn) else None
        wrapped = cls(
            code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
            details if isinstance(details, str) else str(err),
            method,
        )
        wrapped.__cause__ = err
        return wrapped


def code_text(code: grpc.StatusCode) -> str:
    """The code as the error text starts with it: lower case, and CANCELLED
    with one L, as connect (the TypeScript and Go clients) spells it."""
    return "canceled" if code is grpc.StatusCode.CANCELLED else code.name.lower()


def status_code(err: BaseException) -> grpc.StatusCode | None:
    """The status code of a grpc error (sync or asyncio), or None."""
    code_fn = getattr(err, "code", None)
    if not callable(code_fn):
        return None
    code = code_fn()
    return code if isinstance(code, grpc.StatusCode) else None


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help.

    The worker nacks the job with ``permanent=True``: the broker skips the
    remaining attempts and moves the job straight to DEAD, keeping this
    error's message in the job's error history. Any other exception is a
    transient failure, and the job is retried after its backoff.
    """


class PayloadError(PermanentError):
    """A job's payload could not be decoded for its content type."""
