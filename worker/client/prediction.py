"""The raw SPEC 5 prediction a request resolves to, for policies that need more than hints.

`worker.learner.lookup_hints` turns the prediction it finds into the AgentHints fields;
priority policies need the numbers behind them (mean output tokens, mean calls remaining),
found by the same walk (`lookup_prediction`, imported from the learner).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.learner.hints import lookup_prediction

__all__ = ["agent_prediction", "lookup_prediction", "remaining_run_tokens"]


def agent_prediction(trie: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The agent-wide prediction: the root's across-indices one (the default hints' source)."""
    return trie["root"]["predictions_any_index"]  # type: ignore[no-any-return]


def remaining_run_tokens(
    call: Mapping[str, Any] | None, agent: Mapping[str, Any] | None
) -> float | None:
    """Predicted output tokens a run still produces, this call included: the call's own mean
    output tokens plus its mean calls remaining times the agent's mean tokens per call.
    None without a prediction for the call."""
    if call is None:
        return None
    own = float(call["output_tokens"]["mean"])
    later = float(call["remaining_calls"]["mean"])
    per_call = float(agent["output_tokens"]["mean"]) if agent is not None else own
    return max(own, 0.0) + max(later, 0.0) * max(per_call, 0.0)
