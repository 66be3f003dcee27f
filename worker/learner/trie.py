"""SPEC section 5: turn an agent's statistics into the published prediction trie."""

from __future__ import annotations

from typing import Any

from worker.learner.adaptive_trie import AdaptiveTrie
from worker.learner.config import LearnerConfig
from worker.learner.hints import default_hint_values, sensitivity_level
from worker.learner.nodes import NodeStats, StatGroup
from worker.learner.state import AgentState
from worker.models import TrieEnvelope
from worker.models.timestamps import now_rfc3339


def prediction(group: StatGroup, scale: int) -> dict[str, Any]:
    return {
        "remaining_calls": group.remaining_calls.metrics(),
        "interarrival_ms": group.interarrival_ms.metrics(),
        "output_tokens": group.output_tokens.metrics(),
        "latency_sensitivity": sensitivity_level(group.score, scale),
    }


def node_dict(name: str, node: NodeStats, children: dict[str, Any], scale: int) -> dict[str, Any]:
    any_index = node.any_index
    by_index = node.by_index
    return {
        "name": name,
        "children": children,
        "predictions_by_call_index": {
            str(index): prediction(by_index[index], scale) for index in sorted(by_index)
        },
        "predictions_any_index": (
            prediction(any_index, scale) if any_index.remaining_calls.count else None
        ),
    }


def trie_dict(agent_id: str, state: AgentState, config: LearnerConfig) -> dict[str, Any]:
    """The TrieEnvelope as plain JSON-ready data (what is published to `agent-tries`)."""
    if config.semantics == "adaptive":
        return AdaptiveTrie(state, config).trie(agent_id)
    scale = config.scale
    children = {
        name: node_dict(name, node, {}, scale) for name, node in sorted(state.children.items())
    }
    return {
        "version": "1.0",
        "generated_at": now_rfc3339(),
        "workflow_name": agent_id,
        "root": node_dict("root", state.root, children, scale),
    }


def build_trie(agent_id: str, state: AgentState, config: LearnerConfig) -> TrieEnvelope:
    """The agent's prediction trie, as a validated TrieEnvelope model."""
    return TrieEnvelope.model_validate(trie_dict(agent_id, state, config))


def state_hints(state: AgentState, config: LearnerConfig) -> dict[str, Any] | None:
    """The default hints (AgentHints fields) straight from the root's statistics.

    Equal to `default_hints(build_trie(...))` without building the trie or any model: the
    worker publishes hints more often than whole tries. Only the percentile a hint uses is
    read (`p90`); the two means are read directly, which spares folding and reading the
    percentiles of those statistics.
    """
    if config.semantics == "adaptive":
        return AdaptiveTrie(state, config).hints()
    group = state.root.any_index
    if not group.remaining_calls.count:
        return None
    return default_hint_values(
        group.output_tokens.p90(),
        group.interarrival_ms.mean,
        group.remaining_calls.mean,
        sensitivity_level(group.score, config.scale),
        config,
    )
