"""RFC 3339 timestamps as integer nanoseconds since the Unix epoch.

Run records carry up to nanosecond fractions; `datetime` keeps only microseconds, so the
learner works on exact integer nanoseconds instead (overlap detection compares them).
Compiled with the learner (mypyc, setup.py): a run record has ~20 timestamps.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Final

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ZERO = timedelta(0)
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)", re.ASCII
)
NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000


#: epoch ns of "YYYY-MM-DDTHH:MM:SS" prefixes of UTC timestamps the general parser accepted
#: (so a hit vouches for the date, the time and the seconds): a run's timestamps share them
_SECONDS: Final[dict[str, int]] = {}
_SECONDS_MAX: Final = 8192
#: ns per unit of the last fraction digit, by fraction length (1..9 digits)
_FRACTION_SCALE: Final[tuple[int, ...]] = (0, *(10 ** (9 - n) for n in range(1, 10)))
_UTC_ZONES: Final = frozenset(("Z", "z", "+00:00", "-00:00"))
_UTC_OFFSETS = ("+00:00", "-00:00")


def parse_timestamp_ns(text: object) -> int:
    """Parse an RFC 3339 timestamp (zone required) into nanoseconds since the epoch.

    An int is taken as nanoseconds already (records built in code rather than parsed).
    Anything else is a ValueError, whatever its type (typed `object` so that the compiled
    function checks it here rather than raising TypeError at its boundary).
    """
    if type(text) is int:
        return text
    if not isinstance(text, str):
        raise ValueError("timestamp must be an RFC 3339 string")
    return parse_rfc3339_ns(text)


def parse_rfc3339_ns(text: str) -> int:
    """`parse_timestamp_ns` for a str, with the common case inline (it runs ~20 times a run).

    The common case: a UTC time ("Z", "z", "+00:00" or "-00:00") in a second seen before,
    without datetime. Anything else, every invalid input included, goes to the general
    parser, which decides.
    """
    base = _SECONDS.get(text[:19])
    if base is not None:
        # the usual form (as `format_timestamp_ns` writes it): 9 fraction digits and "Z"
        if len(text) == 30 and text[29] == "Z" and text[19] == ".":
            digits = text[20:29]
            if digits.isdigit() and digits.isascii():
                return base + int(digits)
        tail = text[19:]  # "" or ".fraction", then the zone
        if tail in _UTC_ZONES:
            return base
        if tail[:1] == ".":
            if tail[-1] in "Zz":
                digits = tail[1:-1]
            elif tail[-6:] in _UTC_OFFSETS:
                digits = tail[1:-6]
            else:
                return _parse_general(text)
            if 0 < len(digits) <= 9 and digits.isdigit() and digits.isascii():
                return base + int(digits) * _FRACTION_SCALE[len(digits)]
    return _parse_general(text)


def _parse_general(text: str) -> int:
    if _RFC3339.fullmatch(text) is None:
        raise ValueError(
            "not an RFC 3339 timestamp with a zone (YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm),"
            " at most 9 fraction digits)"
        )
    moment = datetime.fromisoformat(text.upper())  # RFC 3339 allows 't' and 'z'
    ns = (moment - _EPOCH) // _MICROSECOND * 1000
    dot = text.find(".", 19)
    if dot > 0:  # datetime keeps 6 fraction digits; add back the nanoseconds past them
        zone = 1 if text[-1] in "Zz" else 6
        digits = len(text) - dot - 1 - zone
        if digits > 6:
            ns += int(text[dot + 7 : dot + 1 + min(digits, 9)].ljust(3, "0"))
    if moment.utcoffset() == _ZERO:  # the regex matched: text[:19] is "YYYY-MM-DDTHH:MM:SS"
        if len(_SECONDS) >= _SECONDS_MAX:
            _SECONDS.clear()
        _SECONDS[text[:19]] = ns - ns % NS_PER_SECOND
    return ns


#: "YYYY-MM-DDTHH:MM:SS." of seconds formatted lately: records repeat them a lot
_PREFIXES: Final[dict[int, str]] = {}
_PREFIXES_MAX: Final = 1024


def format_timestamp_ns(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 in UTC with `Z` and always nine fraction
    digits, as SPEC 9 writes run records (`1764242363423395280` ->
    `"2025-11-27T11:19:23.423395280Z"`). Fast: the recorder calls it twice per LLM call."""
    seconds, fraction = divmod(ns, NS_PER_SECOND)
    prefix = _PREFIXES.get(seconds)
    if prefix is None:
        if len(_PREFIXES) >= _PREFIXES_MAX:
            _PREFIXES.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
        _PREFIXES[seconds] = prefix
    # str() of 1xxxxxxxxx minus its "1": nine zero-padded digits, 2.5x faster than f"{:09d}"
    return prefix + str(fraction + NS_PER_SECOND)[1:] + "Z"


def now_rfc3339() -> str:
    """The current time as RFC 3339 in UTC, for `generated_at` and `updated_at`."""
    return datetime.now(UTC).isoformat()
