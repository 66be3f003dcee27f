"""Per-record limits (SPEC 2): records over them are rejected as `too_large` or `limits`.

Pure checks on the bytes, the decoded run and the agent's state, shared by the streaming
worker and `replay`, so that both reject exactly the same records.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from worker.errors import RecordError
from worker.learner.state import AgentState
from worker.models import Run


class Limits(BaseModel):
    """Bounds on what one record may hold and what one agent's trie may grow to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_record_bytes: int = Field(default=1_048_576, ge=1)
    max_calls_per_run: int = Field(default=10_000, ge=1)
    max_name_length: int = Field(default=256, ge=1)
    #: distinct trie nodes per agent (root included)
    max_trie_nodes: int = Field(default=10_000, ge=1)


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
    for index, call in enumerate(run.calls):
        if len(call.name) > limits.max_name_length:
            raise RecordError(
                "limits",
                f"calls.{index}.name is {len(call.name)} characters, limit max_name_length "
                f"is {limits.max_name_length}",
            )


def check_nodes(state: AgentState, run: Run, limits: Limits) -> None:
    """Reject a run that would grow the agent's trie past `max_trie_nodes`."""
    after = state.nodes_after(run)
    if after > limits.max_trie_nodes and after > state.node_count:
        raise RecordError(
            "limits",
            f"agent {run.agent_id} would have {after} trie nodes, limit max_trie_nodes is "
            f"{limits.max_trie_nodes}",
        )
