"""The input record of SPEC section 2: RunRecord and its calls, and how to decode one.

Records mirror the JSON that serde writes for NeMo Flow's `RunRecord`; unknown fields are
ignored. Timestamps are held as integer nanoseconds since the epoch (see `timestamps`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from worker.errors import RecordError
from worker.models.timestamps import format_timestamp_ns, parse_timestamp_ns

UINT32_MAX = 2**32 - 1


def _timestamp(value: object, info: ValidationInfo) -> int:
    """SPEC 2: in JSON a timestamp is RFC 3339 text (a number is a schema error); records
    built in code may give integer nanoseconds."""
    if info.mode == "json" and not isinstance(value, str):
        raise ValueError("timestamp must be an RFC 3339 string")
    return parse_timestamp_ns(value)


#: An RFC 3339 timestamp with a zone, held as nanoseconds since the Unix epoch.
Timestamp = Annotated[
    int,
    BeforeValidator(_timestamp),
    PlainSerializer(format_timestamp_ns, return_type=str),
]
#: A JSON integer in 0..2^32-1, as serde's u32 accepts it (no strings, no floats).
UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX, strict=True)]
#: what SPEC 2 calls a control character: U+0000-U+001F and U+007F
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def _printable(text: str) -> str:
    """SPEC 2: an agent id or call name with a control character is a schema error."""
    found = CONTROL_CHARACTER.search(text)
    if found:
        raise ValueError(f"contains a control character (U+{ord(found.group()):04X})")
    return text


#: An agent id or call name: no control characters (U+0000-U+001F, U+007F).
Name = Annotated[str, AfterValidator(_printable)]


def _ends_after_start(started_at: int, ended_at: int | None) -> None:
    if ended_at is not None and ended_at < started_at:
        raise ValueError(f"ended_at {_shown(ended_at)} is before started_at {_shown(started_at)}")


def _shown(ns: int) -> str:
    """A timestamp for an error message: integer ns past datetime's years (a record built in
    code can hold any) as they are, rather than an OverflowError out of the validator."""
    try:
        return format_timestamp_ns(ns)
    except (OverflowError, ValueError, OSError):
        return f"{ns} ns"


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CallRecord(_Input):
    """One LLM or tool call inside a run."""

    kind: Literal["llm", "tool"]
    name: Name
    started_at: Timestamp
    ended_at: Timestamp | None = None
    output_tokens: UInt32 | None = None
    prompt_tokens: UInt32 | None = None
    total_tokens: UInt32 | None = None
    model_name: str | None = None
    tool_call_count: UInt32 | None = None
    metadata_snapshot: dict[str, Any] | None = None
    annotated_request: dict[str, Any] | None = None
    annotated_response: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> CallRecord:
        _ends_after_start(self.started_at, self.ended_at)
        return self


class RunRecord(_Input):
    """One finished agent run: the unit the learner folds into an agent's state."""

    id: UUID
    agent_id: Annotated[Name, Field(min_length=1)]
    calls: list[CallRecord]
    started_at: Timestamp
    ended_at: Timestamp | None = None

    @model_validator(mode="after")
    def _ordered(self) -> RunRecord:
        _ends_after_start(self.started_at, self.ended_at)
        return self


def describe_validation_error(error: ValidationError, limit: int = 3) -> str:
    """Name each failing field by its path (`calls.2.started_at`) with pydantic's message."""
    parts = []
    for item in error.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "record"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "model_type":
            message = "expected a JSON object"
        parts.append(f"{where}: {message}")
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse_run_validated(data: bytes | str) -> RunRecord:
    """Decode one RunRecord from JSON, or raise RecordError (`invalid_json` or `schema`).

    The reference decoder: `fast_runs.parse_run` (what the worker calls) tries msgspec
    first and comes here for anything it declines, so the errors are these.
    """
    try:
        return RunRecord.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise RecordError("invalid_json", first["msg"]) from None
        if first["type"] == "model_type" and not first["loc"]:
            raise RecordError("schema", "expected a JSON object") from None
        raise RecordError("schema", describe_validation_error(exc)) from None
