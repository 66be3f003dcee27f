"""RFC 3339 timestamps as integer nanoseconds since the Unix epoch.

Run records carry up to nanosecond fractions; `datetime` keeps only microseconds, so the
learner works on exact integer nanoseconds instead (overlap detection compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000


def parse_timestamp_ns(text: str | int) -> int:
    """Parse an RFC 3339 timestamp (zone required) into nanoseconds since the epoch.

    An int is taken as nanoseconds already (records built in code rather than parsed).
    """
    if type(text) is int:
        return text
    if not isinstance(text, str):
        raise ValueError("timestamp must be an RFC 3339 string")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = datetime.fromisoformat(text.upper())  # RFC 3339 allows 't' and 'z'
    if moment.tzinfo is None:
        raise ValueError("timestamp has no zone (expected 'Z' or ±hh:mm)")
    ns = (moment - _EPOCH) // _MICROSECOND * 1000
    dot = text.find(".", 19)
    if dot > 0:  # datetime keeps 6 fraction digits; add back the nanoseconds past them
        zone = 1 if text[-1] in "Zz" else 6
        digits = len(text) - dot - 1 - zone
        if digits > 6:
            ns += int(text[dot + 7 : dot + 1 + min(digits, 9)].ljust(3, "0"))
    return ns


def format_timestamp_ns(ns: int) -> str:
    """Format nanoseconds since the epoch as RFC 3339 in UTC, keeping every digit."""
    seconds, fraction = divmod(ns, NS_PER_SECOND)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction == 0:
        return base + "Z"
    return f"{base}.{fraction:09d}".rstrip("0") + "Z"


def now_rfc3339() -> str:
    """The current time as RFC 3339 in UTC, for `generated_at` and `updated_at`."""
    return datetime.now(UTC).isoformat()
