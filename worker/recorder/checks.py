"""Values the worker would refuse in a run record, refused where the agent passes them.

The rules are the worker's own (SPEC 2: names without control characters, counts within
serde's u32), so a run the recorder accepts is a run the worker accepts; a bad value is a
ValueError at the caller, not a dead-lettered record later.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from worker.models.runs import CONTROL_CHARACTER, UINT32_MAX

#: names already checked (agents and calls repeat a handful of names over and over)
_checked_names: set[str] = set()
_CHECKED_NAMES_MAX = 10_000


def check_name(value: object, what: str, *, allow_empty: bool = True) -> str:
    """`value` if it is a string the worker accepts as a name (SPEC 2), else ValueError."""
    if type(value) is str and value in _checked_names:
        return value
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"{what} must not be empty")
    match = CONTROL_CHARACTER.search(value)
    if match is not None:
        raise ValueError(
            f"{what} {value!r} contains the control character U+{ord(match.group()):04X}; "
            "the worker rejects such records"
        )
    if len(_checked_names) >= _CHECKED_NAMES_MAX:
        _checked_names.clear()
    if value:
        _checked_names.add(value)
    return value


def check_uint32(value: object, what: str) -> int | None:
    """None, or an int in 0..2^32-1 (serde's u32), else ValueError."""
    if type(value) is int and 0 <= value <= UINT32_MAX:
        return value
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= UINT32_MAX:
        raise ValueError(f"{what} must be in 0..{UINT32_MAX}, got {value}")
    return int(value)


def json_object(value: object, what: str) -> orjson.Fragment:
    """A JSON object, encoded once now: bad values fail here, at the caller, not at send time."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping (a JSON object), got {type(value).__name__}")
    try:
        return orjson.Fragment(orjson.dumps(dict(value)))
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None
