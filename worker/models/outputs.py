"""The output shapes of SPEC section 3: hints, prediction tries and their envelopes."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from worker.models.runs import UInt32


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
    """A node; fields beyond SPEC 3's are kept as they are (the adaptive rule set's `model`)."""

    model_config = ConfigDict(extra="allow")

    name: str
    children: dict[str, TrieNode]
    predictions_by_call_index: dict[str, Prediction]
    predictions_any_index: Prediction | None


class TrieEnvelope(_Output):
    version: Literal["1.0"] = "1.0"
    generated_at: str
    workflow_name: str
    root: TrieNode


class Accuracy(_Output):
    """An agent's recent accuracy (SPEC 10) over its last scored calls (at most 100)."""

    scored: int
    osl_coverage: float  # share of those calls with output tokens <= the osl they had
    osl_mae: float  # mean |p50 - output tokens| over them


class HintsRecord(_Output):
    """The value published to `agent-hints`, keyed by agent id; `accuracy` is absent (or
    null) until a call of the agent was scored."""

    agent_id: str
    hints: AgentHints
    runs: int
    updated_at: str
    accuracy: Accuracy | None = None


def dumps(value: Any) -> bytes:
    """Compact JSON bytes for output records and plain dicts alike."""
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return orjson.dumps(value)
