"""The errors jobwire raises, and the one a handler raises to give up on a job."""

from __future__ import annotations

import grpc


class JobwireError(Exception):
    """A call to the broker failed.

    ``code`` is the gRPC status code the broker (or the transport) answered
    with, ``details`` its message. The original ``grpc.RpcError`` is kept as
    ``__cause__``.
    """

    def __init__(self, code: grpc.StatusCode, details: str, method: str = "") -> None:
        self.code = code
        self.details = details
        self.method = method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name}: {details}")

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError, method: str = "") -> "JobwireError":
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        wrapped = cls(code or grpc.StatusCode.UNKNOWN, details or "", method)
        wrapped.__cause__ = err
        return wrapped


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help.

    The worker nacks the job with ``permanent=True``: the broker skips the
    remaining attempts and moves the job straight to DEAD, keeping this
    error's message in the job's error history. Any other exception is a
    transient failure, and the job is retried after its backoff.
    """


class PayloadError(PermanentError):
    """A job's payload could not be decoded for its content type."""
