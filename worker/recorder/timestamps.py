"""Timestamps the recorder's callers pass: integer nanoseconds or aware datetimes, checked.

They are written by `worker.models.timestamps.format_timestamp_ns` (SPEC 9's form).
"""

from __future__ import annotations

from datetime import UTC, datetime

NS_PER_SECOND = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: the range `gmtime` formats everywhere (and RFC 3339's four-digit years)
MIN_NS = 0
MAX_NS = 253_402_300_799_999_999_999  # 9999-12-31T23:59:59.999999999Z

#: a timestamp passed by the caller: integer nanoseconds since the Unix epoch, or an aware datetime
TimestampInput = int | datetime


def to_ns(value: TimestampInput, what: str = "timestamp") -> int:
    """Nanoseconds since the epoch from an int (ns) or a timezone-aware datetime.

    Raises ValueError naming `what` for anything else (naive datetimes, floats, bools,
    negative or out-of-range values)."""
    if type(value) is int:
        ns = value
    elif isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(f"{what}: a datetime needs a timezone (got a naive one)")
        ns = _datetime_ns(value)
    else:
        raise ValueError(
            f"{what}: expected nanoseconds since the Unix epoch (int) or an aware datetime, "
            f"got {type(value).__name__}"
        )
    if not MIN_NS <= ns <= MAX_NS:
        raise ValueError(f"{what}: {ns} ns is outside 1970-01-01..9999-12-31")
    return ns


def _datetime_ns(value: datetime) -> int:
    delta = value - _EPOCH  # exact integer arithmetic, unlike datetime.timestamp()
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000
