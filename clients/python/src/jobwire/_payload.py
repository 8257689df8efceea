"""Payload encoding: JSON for Python values, bytes passed through untouched."""

from __future__ import annotations

import json
from typing import Any

from .errors import PayloadError

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


def encode(payload: Any, content_type: str | None = None) -> tuple[bytes, str]:
    """Returns (payload bytes, content type) for a JobSpec.

    bytes-like payloads are sent as they are, as application/octet-stream
    unless content_type says otherwise. Anything else is encoded as compact
    UTF-8 JSON, and content_type defaults to application/json.
    """
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), content_type or OCTET_STREAM
    try:
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"payload is not JSON-serialisable ({err}); pass bytes to send it raw") from err
    return data.encode("utf-8"), content_type or JSON


def is_json(content_type: str) -> bool:
    """True for application/json and application/*+json, parameters ignored.

    An empty content type counts as JSON: that is the API's default.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if not media:
        return True
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


def decode(data: bytes, content_type: str) -> Any:
    """The payload a handler sees: decoded JSON, or the raw bytes otherwise.

    An empty JSON payload decodes to None. A JSON payload that does not parse
    raises PayloadError, a PermanentError: retrying cannot fix it.
    """
    if not is_json(content_type):
        return data
    if not data:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise PayloadError(f"payload is not valid JSON for content type {content_type or JSON!r}: {err}") from err
