"""Per-record limits (SPEC: records over configurable limits go to the DLQ, reason `limits`)."""

from __future__ import annotations

from worker.learner import AgentState
from worker.records import RecordError, RunRecord
from worker.settings import LimitSettings


def check_size(value: bytes | None, limits: LimitSettings) -> None:
    """Reject a missing value (`schema`) or one over `max_record_bytes` (`too_large`)."""
    if value is None:
        raise RecordError("schema", "record has no value (tombstone)")
    if len(value) > limits.max_record_bytes:
        raise RecordError(
            "too_large",
            f"record is {len(value)} bytes, limit max_record_bytes is {limits.max_record_bytes}",
        )


def check_run(run: RunRecord, limits: LimitSettings) -> None:
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


def check_nodes(state: AgentState, run: RunRecord, limits: LimitSettings) -> None:
    """Reject a run that would grow the agent's trie past `max_trie_nodes`."""
    after = state.nodes_after(run)
    if after > limits.max_trie_nodes and after > state.node_count:
        raise RecordError(
            "limits",
            f"agent {run.agent_id} would have {after} trie nodes, limit max_trie_nodes is "
            f"{limits.max_trie_nodes}",
        )
