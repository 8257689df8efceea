"""Conversions between Python values and protobuf well-known types."""

from __future__ import annotations

import datetime as _dt

from google.protobuf import duration_pb2, timestamp_pb2

# Seconds (int or float), a timedelta, or an already built Duration.
DurationLike = int | float | _dt.timedelta | duration_pb2.Duration


def to_duration(value: DurationLike) -> duration_pb2.Duration:
    """Builds a Duration; plain numbers are seconds. Negative values are refused."""
    if isinstance(value, duration_pb2.Duration):
        out = duration_pb2.Duration()
        out.CopyFrom(value)
        return out
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"expected seconds, a timedelta or a Duration, got {type(value).__name__}")
    if seconds < 0:
        raise ValueError(f"durations must not be negative, got {seconds}s")
    out = duration_pb2.Duration()
    # Whole nanoseconds, rounded, so 0.05 becomes exactly 50ms.
    nanos = round(seconds * 1_000_000_000)
    out.seconds, out.nanos = divmod(nanos, 1_000_000_000)
    return out


def duration_seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1_000_000_000


def to_timestamp(value: _dt.datetime | timestamp_pb2.Timestamp) -> timestamp_pb2.Timestamp:
    """Builds a Timestamp. A naive datetime is taken as UTC, as protobuf does."""
    out = timestamp_pb2.Timestamp()
    if isinstance(value, timestamp_pb2.Timestamp):
        out.CopyFrom(value)
        return out
    if not isinstance(value, _dt.datetime):
        raise TypeError(f"expected a datetime or a Timestamp, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    out.FromDatetime(value)
    return out


def timestamp_seconds(value: timestamp_pb2.Timestamp) -> float:
    """Seconds since the Unix epoch, as time.time() counts them."""
    return value.seconds + value.nanos / 1_000_000_000


def to_datetime(value: timestamp_pb2.Timestamp) -> _dt.datetime:
    """An aware UTC datetime, to the microsecond."""
    return _dt.datetime.fromtimestamp(value.seconds, _dt.timezone.utc) + _dt.timedelta(microseconds=value.nanos // 1000)


def to_timedelta(value: duration_pb2.Duration) -> _dt.timedelta:
    """A timedelta, to the microsecond."""
    return _dt.timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
