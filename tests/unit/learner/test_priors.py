"""Priors: the fleet's nodes of a call name and model pooled into a prediction (worked by
hand), the index a router keeps, and `replay --evaluate` serving agents without history."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.runs import llm, run
from worker.learner import AgentState, LearnerConfig, trie_dict
from worker.learner.fleet_evaluation import Evaluation
from worker.learner.priors import PriorIndex, component, mixture, pool

ADAPTIVE = LearnerConfig(semantics="adaptive")


def metrics(count: int, mean: float, p50: float, p90: float, p95: float) -> dict[str, Any]:
    return {"sample_count": count, "mean": mean, "p50": p50, "p90": p90, "p95": p95}


def prediction(tokens: dict[str, Any], level: int | None = 3) -> dict[str, Any]:
    return {
        "remaining_calls": metrics(tokens["sample_count"], 1.0, 1.0, 2.0, 2.0),
        "interarrival_ms": metrics(0, 0.0, 0.0, 0.0, 0.0),
        "output_tokens": tokens,
        "latency_sensitivity": level,
    }


def test_one_component_is_its_own_prior() -> None:
    pooled = mixture([(7, 12.5, 10.0, 20.0, 25.0)])
    assert (pooled["sample_count"], pooled["mean"]) == (7, 12.5)
    assert [pooled[p] for p in ("p50", "p90", "p95")] == pytest.approx([10.0, 20.0, 25.0])


def test_two_components_mix_their_distributions() -> None:
    """A (p50 10, p90 20, p95 25) and B (100, 200, 250), 10 samples each. Below 100 B's CDF
    rises from 0 (lo = 2 * 100 - 200) to 0.5: x / 200. At 20, A is at 0.9 and B at 0.1:
    the mixture at 0.5, its median. Past A's top (25 + 2 * 5 = 35) A is at 1, so the
    mixture's 0.9 is where B reaches 0.8: 100 + (0.3 / 0.4) * 100 = 175; 0.95 at B's 200."""
    pooled = mixture([(10, 12.0, 10.0, 20.0, 25.0), (10, 110.0, 100.0, 200.0, 250.0)])
    assert pooled["sample_count"] == 20 and pooled["mean"] == 61.0
    assert pooled["p50"] == pytest.approx(20.0)
    assert pooled["p90"] == pytest.approx(175.0)
    assert pooled["p95"] == pytest.approx(200.0)


def test_weights_are_sample_counts_and_the_level_their_mean() -> None:
    a = component("m", prediction(metrics(30, 10.0, 10.0, 10.0, 10.0), level=2))
    b = component("m", prediction(metrics(10, 50.0, 50.0, 50.0, 50.0), level=5))
    assert a is not None and b is not None
    pooled = pool([a, b])
    assert pooled is not None
    assert pooled["output_tokens"]["mean"] == 20.0  # (30 * 10 + 10 * 50) / 40
    assert pooled["output_tokens"]["p50"] == 10.0  # 3/4 of the mass sits at 10
    assert pooled["latency_sensitivity"] == 3  # (30 * 2 + 10 * 5) / 40 = 2.75, rounded
    assert pooled["interarrival_ms"]["sample_count"] == 0


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {},
        prediction(metrics(-1, 1.0, 1.0, 1.0, 1.0)),
        {**prediction(metrics(1, 1, 1, 1, 1)), "latency_sensitivity": "x"},
    ],
)
def test_what_is_not_a_prediction_is_not_a_component(bad: Any) -> None:
    assert component("m", bad) is None
    assert component(7, prediction(metrics(1, 1.0, 1.0, 1.0, 1.0))) is None


def adaptive_trie(agent: str, *tokens_and_models: tuple[int, str]) -> dict[str, Any]:
    state = AgentState()
    for tokens, model in tokens_and_models:
        state.learn(run(llm("plan", 0, 100, tokens, model), ended=100, agent=agent), ADAPTIVE)
    return trie_dict(agent, state, ADAPTIVE)


def test_the_index_pools_the_nodes_of_a_name_with_the_model_asked() -> None:
    index = PriorIndex()
    index.set_trie("x", adaptive_trie("x", (100, "small"), (100, "small")))
    index.set_trie("y", adaptive_trie("y", (300, "big")))
    small = index.prediction("plan", "small")
    assert small is not None and small["output_tokens"]["p50"] == 100.0
    both = index.prediction("plan", "unknown-model")  # no node has it: every node of the name
    assert both is not None and both["output_tokens"]["sample_count"] == 3
    assert index.prediction("plan") == both
    assert index.prediction("write") is None
    index.set_trie("x", None)  # gone (a tombstone)
    only = index.prediction("plan", "small")
    assert only is not None and only["output_tokens"]["p50"] == 300.0
    corrected = trie_dict("z", AgentState(), LearnerConfig())  # no `model`: not a prior
    index.set_trie("y", corrected)
    assert index.prediction("plan") is None and len(index) == 0


def test_a_stale_prior_is_kept_for_max_stale_s() -> None:
    now = [0.0]
    index = PriorIndex(max_stale_s=1.0, clock=lambda: now[0])
    index.set_trie("x", adaptive_trie("x", (100, "m")))
    first = index.prediction("plan", "m")
    index.set_trie("y", adaptive_trie("y", (500, "m")))
    assert index.prediction("plan", "m") is first  # pooled less than a second ago
    now[0] = 1.0
    again = index.prediction("plan", "m")
    assert again is not None and again["output_tokens"]["sample_count"] == 2


def test_replay_evaluate_serves_an_agent_without_history_from_the_prior() -> None:
    """Agent `old` learned `plan` (100 tokens, model m) twice (its first run had nothing:
    `none`); `new`'s first run is scored against that prior (osl = p90 = 100): source
    `prior`, but its `other` call, a name no agent has, `none`."""
    evaluation = Evaluation(ADAPTIVE)
    for _ in range(2):
        evaluation.learn(run(llm("plan", 0, 100, 100, "m"), ended=100, agent="old"))
    evaluation.learn(run(llm("plan", 0, 100, 90, "m"), llm("other", 200, 300, 5), agent="new"))
    report = evaluation.summary()
    assert report["sources"] == {"trie": 1, "agent_default": 0, "prior": 1, "none": 2}
    scores = evaluation.last["ours"]
    assert [s.source for s in scores] == ["prior", "none"]
    assert scores[0].covered and scores[0].osl_error == 10.0
    corrected = Evaluation(LearnerConfig())
    assert set(corrected.summary()["sources"]) == {"trie", "agent_default", "none"}
