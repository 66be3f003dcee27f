"""Per-record limits (SPEC 2): records over them are rejected as `too_large` or `limits`.

Pure checks on the bytes, the decoded run and the agent's state, shared by the streaming
worker and `replay`, so that both reject exactly the same records.
"""

from __future__ import annotations

import orjson
from pydantic import BaseModel, ConfigDict, Field

from worker.errors import RecordError, SettingsError
from worker.learner.adaptive import MODEL_CHARS
from worker.learner.state import AgentState
from worker.models import Run


class Limits(BaseModel):
    """Bounds on what one record may hold and what one agent's trie may grow to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_record_bytes: int = Field(default=1_048_576, ge=1)
    max_calls_per_run: int = Field(default=10_000, ge=1)
    max_name_length: int = Field(default=256, ge=1)
    #: distinct trie nodes per agent (root included)
    max_trie_nodes: int = Field(default=128, ge=1)
    #: per-call-index predictions per agent, all nodes together
    max_trie_predictions: int = Field(default=1_000, ge=1)


def check_size(value: bytes | None, limits: Limits) -> bytes:
    """The value itself, or RecordError for a missing value (`schema`) or one too large."""
    if value is None:
        raise RecordError("schema", "record has no value (tombstone)")
    if len(value) > limits.max_record_bytes:
        raise RecordError(
            "too_large",
            f"record is {len(value)} bytes, limit max_record_bytes is {limits.max_record_bytes}",
        )
    return value


def check_run(run: Run, limits: Limits) -> None:
    """Limits that need only the run itself: calls per run, name length."""
    if len(run.calls) > limits.max_calls_per_run:
        raise RecordError(
            "limits",
            f"run has {len(run.calls)} calls, limit max_calls_per_run is "
            f"{limits.max_calls_per_run}",
        )
    if len(run.agent_id) > limits.max_name_length:
        raise RecordError(
            "limits",
            f"agent_id is {len(run.agent_id)} characters, limit max_name_length is "
            f"{limits.max_name_length}",
        )
    longest = limits.max_name_length  # read once: a settings attribute, ~20 calls a run
    for index, call in enumerate(run.calls):
        if len(call.name) > longest:
            raise RecordError(
                "limits",
                f"calls.{index}.name is {len(call.name)} characters, limit max_name_length "
                f"is {longest}",
            )


def check_trie(state: AgentState, run: Run, limits: Limits) -> None:
    """Reject a run that would grow the agent's trie past `max_trie_nodes` or
    `max_trie_predictions` (which bound its published size: `trie_bytes_bound`)."""
    # a run adds at most one node and two predictions (its index at the node and at the
    # root) per call: within the limits even then, it needs no exact count
    calls = len(run.calls)
    if (
        state.node_count + calls <= limits.max_trie_nodes
        and state.prediction_count + 2 * calls <= limits.max_trie_predictions
    ):
        return
    nodes, predictions = state.size_after(run)
    if nodes > limits.max_trie_nodes and nodes > state.node_count:
        raise RecordError(
            "limits",
            f"agent {run.agent_id} would have {nodes} trie nodes, limit max_trie_nodes is "
            f"{limits.max_trie_nodes}",
        )
    if predictions > limits.max_trie_predictions and predictions > state.prediction_count:
        raise RecordError(
            "limits",
            f"agent {run.agent_id} would have {predictions} trie predictions (one per node "
            f"and call index), limit max_trie_predictions is {limits.max_trie_predictions}",
        )


#: the longest JSON numbers a trie holds: statistics of non-negative samples, counts, levels
_LONGEST_FLOAT = 2.2250738585072014e-308
_LONGEST_COUNT = 2**63 - 1
_LONGEST_LEVEL = 2**31 - 1
#: bytes per character of a name in the JSON at most (UTF-8; control characters are refused)
_NAME_BYTES_PER_CHAR = 4


def trie_bytes_bound(limits: Limits, models: bool = False) -> int:
    """The most bytes a published trie (TrieEnvelope JSON) within `limits` can take.

    Every node (at most `max_trie_nodes`, its name twice at most `max_name_length`
    characters, and with `models` (adaptive rule set, priors) a model of at most
    `MODEL_CHARS`) with its any-index prediction, plus `max_trie_predictions` per-call-index
    ones, each with the longest numbers JSON has; the envelope with the longest agent id."""
    metrics = dict.fromkeys(("mean", "p50", "p90", "p95"), _LONGEST_FLOAT)
    metrics = {"sample_count": _LONGEST_COUNT, **metrics}
    prediction = orjson.dumps(
        {
            "remaining_calls": metrics,
            "interarrival_ms": metrics,
            "output_tokens": metrics,
            "latency_sensitivity": _LONGEST_LEVEL,
        }
    )
    name = "x" * (_NAME_BYTES_PER_CHAR * limits.max_name_length)
    empty: dict[str, object] = {
        "name": name,
        "children": {},
        "predictions_by_call_index": {},
        "predictions_any_index": 0,
    }
    if models:
        empty["model"] = "x" * (_NAME_BYTES_PER_CHAR * MODEL_CHARS)
    empty_node = orjson.dumps(empty)
    node = len(orjson.dumps({name: 0})) + len(empty_node) + len(prediction)  # "name":{...},
    entry = len(orjson.dumps({str(limits.max_calls_per_run): 0})) + len(prediction)  # "i":{..},
    envelope = orjson.dumps(
        {
            "generated_at": "2026-11-27T00:00:00.000000+00:00",
            "version": "1.0",
            "workflow_name": name,
            "root": 0,
        }
    )
    return len(envelope) + limits.max_trie_nodes * node + limits.max_trie_predictions * entry


#: a Kafka record's bytes besides its key and value, at most (batch header and record framing)
RECORD_OVERHEAD = 128


def check_publishable(
    limits: Limits, topic: str, max_message_bytes: int, models: bool = False
) -> None:
    """SettingsError unless every trie within `limits` (with `models`: each node's model,
    as the adaptive rule set with priors publishes) fits a record of the `topic`."""
    needed = trie_bytes_bound(limits, models) + _NAME_BYTES_PER_CHAR * limits.max_name_length
    needed += RECORD_OVERHEAD
    if needed > max_message_bytes:
        raise SettingsError(
            f"limits allow tries of up to {needed:,} bytes as a record (max_trie_nodes="
            f"{limits.max_trie_nodes}, max_trie_predictions={limits.max_trie_predictions}, "
            f"max_name_length={limits.max_name_length}), but topic {topic} accepts "
            f"{max_message_bytes:,} (max.message.bytes): lower the limits or raise the "
            "topic's max.message.bytes"
        )
