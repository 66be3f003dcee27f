"""Record shapes of SPEC sections 1-3: what agents send, and what the worker publishes.

Input records mirror the JSON that serde writes for NeMo Flow's `RunRecord`; unknown fields
are ignored. Timestamps are held as integer nanoseconds since the epoch (see `timestamps`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

from worker.timestamps import format_timestamp_ns, parse_timestamp_ns

UINT32_MAX = 2**32 - 1


#: An RFC 3339 timestamp with a zone, held as nanoseconds since the Unix epoch.
Timestamp = Annotated[
    int,
    BeforeValidator(parse_timestamp_ns),
    PlainSerializer(format_timestamp_ns, return_type=str),
]
#: A JSON integer in 0..2^32-1, as serde's u32 accepts it (no strings, no floats).
UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX, strict=True)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CallRecord(_Input):
    """One LLM or tool call inside a run."""

    kind: Literal["llm", "tool"]
    name: str
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


class RunRecord(_Input):
    """One finished agent run: the unit the learner folds into an agent's state."""

    id: UUID
    agent_id: Annotated[str, Field(min_length=1)]
    calls: list[CallRecord]
    started_at: Timestamp
    ended_at: Timestamp | None = None


class RecordError(ValueError):
    """A record that cannot be learned: `reason` is the DLQ machine code, `detail` human text."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def describe_validation_error(error: ValidationError, limit: int = 3) -> str:
    """Name each failing field by its path (`calls.2.started_at`) with pydantic's message."""
    parts = []
    for item in error.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def parse_run(data: bytes | str) -> RunRecord:
    """Decode one RunRecord from JSON, or raise RecordError (`invalid_json` or `schema`)."""
    try:
        return RunRecord.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise RecordError("invalid_json", first["msg"]) from None
        if first["type"] == "model_type":
            raise RecordError("schema", "expected a JSON object") from None
        raise RecordError("schema", describe_validation_error(exc)) from None


# --- outputs (SPEC section 3) -------------------------------------------------------------


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AgentHints(_Output):
    """What a router attaches to an agent's next LLM request."""

    osl: UInt32
    iat: UInt32
    priority: int
    latency_sensitivity: float
    prefix_id: str
    total_requests: UInt32


class Metrics(_Output):
    sample_count: int
    mean: float
    p50: float
    p90: float
    p95: float


class Prediction(_Output):
    remaining_calls: Metrics
    interarrival_ms: Metrics
    output_tokens: Metrics
    latency_sensitivity: int | None


class TrieNode(_Output):
    name: str
    children: dict[str, TrieNode]
    predictions_by_call_index: dict[str, Prediction]
    predictions_any_index: Prediction | None


class TrieEnvelope(_Output):
    version: Literal["1.0"] = "1.0"
    generated_at: str
    workflow_name: str
    root: TrieNode


class HintsRecord(_Output):
    """The value published to `agent-hints`, keyed by agent id."""

    agent_id: str
    hints: AgentHints
    runs: int
    updated_at: str


def dumps(value: Any) -> bytes:
    """Compact JSON bytes for output records and plain dicts alike."""
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return orjson.dumps(value)
