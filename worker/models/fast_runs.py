"""RunRecord JSON decoded on the hot loop: msgspec structs first, the pydantic model for the rest.

`parse_run_validated` (pydantic) stays the reference: it decides what is accepted and words
every error. The fast path decodes with msgspec (in C) into frozen structs with the same
fields, parses the timestamps to integer nanoseconds with the cached RFC 3339 parser and
checks what SPEC 2 adds (ends after starts, printable names). Its structs are not tracked by
the garbage collector, so decoding does not make the collector run (and walk every live
object) as often as pydantic models do.

It declines (None) whatever it cannot vouch the reference accepts with equal values: any
msgspec error (NaN or Infinity literals, braced UUIDs, a bad first of two duplicated keys),
bytes that are not UTF-8 (msgspec skips unknown fields unchecked), nesting deeper than
pydantic's JSON parser allows, integers longer than Python converts, a bad timestamp, a
control character in a name, an end before its start. `parse_run` then asks the reference,
which accepts or raises the usual RecordError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec.structs import force_setattr

from worker.models.run_view import Run
from worker.models.runs import CONTROL_CHARACTER, UINT32_MAX, parse_run_validated
from worker.models.timestamps import parse_rfc3339_ns

#: pydantic's JSON parser (jiter) refuses nesting deeper than this; the fast path declines
#: records with more opening brackets than this, a cheap bound on their depth
JSON_MAX_DEPTH = 200
#: nor does it take a number whose integer part has more digits than this (Python's limit)
JSON_MAX_INT_DIGITS = 4300

_UInt32 = Annotated[int, msgspec.Meta(ge=0, le=UINT32_MAX)]
if TYPE_CHECKING:
    #: integer ns: what a timestamp field holds once `decode_run_fast` has settled it
    _Timestamp = int
else:
    #: what msgspec decodes into a timestamp field: RFC 3339 text (SPEC 2; a number is a
    #: schema error); `_settle_timestamps` makes it integer ns before anyone reads it
    _Timestamp = str


def _settle_timestamps(run: RunStruct) -> bool:
    """The run's and its calls' timestamps to integer ns in place, in one loop (a
    `__post_init__` per struct cost a call from C and two more per struct); False when an
    end precedes its start, ValueError when a timestamp is bad."""
    parse = parse_rfc3339_ns
    structs: tuple[CallStruct | RunStruct, ...] = (*run.calls, run)
    for struct in structs:
        started = parse(struct.started_at)  # type: ignore[arg-type]
        force_setattr(struct, "started_at", started)
        text: str | None = struct.ended_at  # type: ignore[assignment]
        if text is not None:
            ended = parse(text)
            force_setattr(struct, "ended_at", ended)
            if ended < started:
                return False
    return True


class CallStruct(msgspec.Struct, frozen=True, gc=False):
    """A CallRecord as the fast path decodes it (SPEC 2); satisfies `run_view.Call`."""

    kind: Literal["llm", "tool"]
    name: str
    started_at: _Timestamp
    ended_at: _Timestamp | None = None
    output_tokens: _UInt32 | None = None
    prompt_tokens: _UInt32 | None = None
    total_tokens: _UInt32 | None = None
    model_name: str | None = None
    tool_call_count: _UInt32 | None = None
    metadata_snapshot: dict[str, Any] | None = None
    annotated_request: dict[str, Any] | None = None
    annotated_response: dict[str, Any] | None = None


class RunStruct(msgspec.Struct, frozen=True, gc=False):
    """A RunRecord as the fast path decodes it (SPEC 2); satisfies `run_view.Run`."""

    id: UUID
    agent_id: Annotated[str, msgspec.Meta(min_length=1)]
    calls: list[CallStruct]
    started_at: _Timestamp
    ended_at: _Timestamp | None = None


_decoder = msgspec.json.Decoder(RunStruct)
#: one byte per input byte, "1" for a digit and "0" for anything else: finds long digit runs
_DIGIT_MAP = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
_TOO_MANY_DIGITS = b"1" * (JSON_MAX_INT_DIGITS + 1)


def parse_run(data: bytes | str) -> Run:
    """Decode one run from JSON, or raise RecordError (`invalid_json` or `schema`)."""
    run = decode_run_fast(data)
    return run if run is not None else parse_run_validated(data)


def decode_run_fast(data: bytes | str) -> RunStruct | None:
    """The run `parse_run_validated` would return, as a struct, or None when not sure."""
    if type(data) is str:
        try:
            data = data.encode()
        except UnicodeEncodeError:  # a lone surrogate: not UTF-8, the reference refuses it
            return None
    elif type(data) is not bytes:
        return None
    if not _fits_pydantic_parser(data):
        return None
    try:
        run = _decoder.decode(data)
        if not _settle_timestamps(run):  # an end before its start: the reference refuses
            return None
    except Exception:  # whatever the fast path trips on, the reference decides
        return None
    # only a JSON escape (a backslash) or a raw DEL can put a control character in a string
    if (b"\\" in data or b"\x7f" in data) and not _names_printable(run):
        return None
    return run


def _fits_pydantic_parser(data: bytes) -> bool:
    """False for what msgspec accepts but jiter refuses: bad UTF-8, deep nesting, huge ints."""
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError:
            return False
    if data.count(b"[") + data.count(b"{") > JSON_MAX_DEPTH:
        return False
    return len(data) <= JSON_MAX_INT_DIGITS or _TOO_MANY_DIGITS not in data.translate(_DIGIT_MAP)


def _names_printable(run: RunStruct) -> bool:
    """SPEC 2: no control character in the agent id or in any call name."""
    search = CONTROL_CHARACTER.search
    return not search(run.agent_id) and not any(search(call.name) for call in run.calls)
