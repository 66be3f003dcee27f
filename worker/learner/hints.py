"""SPEC section 5: the hints a router attaches to requests, from a prediction trie."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.learner.config import LearnerConfig
from worker.learner.exact_sums import Mean
from worker.learner.rounding import round_half_away, saturate_u32
from worker.learner.stats import Statistic
from worker.models import AgentHints, Prediction, TrieEnvelope


def sensitivity_level(score: Mean | Statistic, scale: int) -> int | None:
    """Mean score in [0, 1] mapped to a level 1..scale; None without any score."""
    return level_at(score.mean, scale) if score.count else None


def level_at(mean: float, scale: int) -> int:
    """SPEC 5's level 1..scale of a mean score in [0, 1]."""
    value = mean * (scale - 1)
    # round_half_away inlined for the usual non-negative mean (it runs for every prediction)
    level = int(value + 0.5) + 1 if value >= 0 else round_half_away(value) + 1
    return min(max(level, 1), scale)


def hint_values(
    osl_p90: float,
    iat_mean: float,
    remaining_mean: float,
    sensitivity: int | None,
    config: LearnerConfig,
    prefix_id: str,
    level: float,
    extra_requests: int,
) -> dict[str, Any]:
    """SPEC section 5's hint fields from the prediction numbers they use (JSON-ready)."""
    return {
        "osl": saturate_u32(osl_p90),
        "iat": saturate_u32(iat_mean),
        "priority": max(config.scale - (sensitivity or 1), 0),
        "latency_sensitivity": level,
        "prefix_id": prefix_id,
        "total_requests": saturate_u32(round_half_away(remaining_mean) + extra_requests),
    }


def default_hints(trie: TrieEnvelope, config: LearnerConfig) -> AgentHints | None:
    """The agent-wide hints, from the root's any-index prediction; None before any LLM call."""
    return default_hints_for(trie.root.predictions_any_index, config)


def default_hint_values(
    osl_p90: float,
    iat_mean: float,
    remaining_mean: float,
    sensitivity: int | None,
    config: LearnerConfig,
) -> dict[str, Any]:
    """The agent-wide hint fields: prefix "default", level = sensitivity (0 without), +1."""
    level = float(sensitivity) if sensitivity is not None else 0.0
    return hint_values(osl_p90, iat_mean, remaining_mean, sensitivity, config, "default", level, 1)


def default_hints_for(p: Prediction | None, config: LearnerConfig) -> AgentHints | None:
    """Default hints from the root's any-index prediction itself."""
    if p is None:
        return None
    return AgentHints(
        **default_hint_values(
            p.output_tokens.p90,
            p.interarrival_ms.mean,
            p.remaining_calls.mean,
            p.latency_sensitivity,
            config,
        )
    )


def lookup_hints(
    trie: Mapping[str, Any], path: Sequence[str], call_index: int, config: LearnerConfig
) -> dict[str, Any] | None:
    """Hints for a request at scope `path` and call index `call_index` (what a router does).

    Works on the published JSON form of a TrieEnvelope (plain dicts, as read from
    `agent-tries` or made by `trie_dict`): the one lookup of the project, shared by the
    learner's tests and the router client. Walks from the root along the path while names
    match; the deepest visited node with a prediction (for this index, else across indices)
    wins. Returns the AgentHints fields, or None when no node on the path has a prediction
    (then the root has none either, so the agent has no default hints yet: SPEC 5's
    fallback to them gives nothing). Raises KeyError / TypeError on a malformed trie.
    """
    found = lookup_prediction(trie, path, call_index)
    if found is None:
        return None
    return prediction_hints(found, f"{trie['workflow_name']}-d{len(path)}", call_index, config)


def lookup_prediction(
    trie: Mapping[str, Any], path: Sequence[str], call_index: int
) -> Mapping[str, Any] | None:
    """The Prediction object `lookup_hints` uses (None when there is none): also what
    priority policies read, as they need the numbers behind the hints."""
    key = str(call_index)
    node = trie["root"]
    found = node["predictions_by_call_index"].get(key) or node["predictions_any_index"]
    for name in path:
        node = node["children"].get(name)
        if node is None:
            break
        own = node["predictions_by_call_index"].get(key) or node["predictions_any_index"]
        if own is not None:
            found = own
    return found  # type: ignore[no-any-return]


def prediction_hints(
    found: Mapping[str, Any], prefix_id: str, call_index: int, config: LearnerConfig
) -> dict[str, Any]:
    """Hints for the `call_index`-th call from the Prediction a lookup found (or a prior):
    SPEC 5's lookup rules."""
    sensitivity = found["latency_sensitivity"]
    return hint_values(
        found["output_tokens"]["p90"],
        found["interarrival_ms"]["mean"],
        found["remaining_calls"]["mean"],
        sensitivity,
        config,
        prefix_id,
        float(sensitivity or 1),
        call_index,
    )
