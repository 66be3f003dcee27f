"""The scenario fleets are what they claim to be (benchmarks/scenarios.py, issue 24)."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import mean
from typing import Any

import orjson

from benchmarks import scenarios
from benchmarks.adaptive import known_distributions
from worker.learner import LearnerConfig
from worker.learner.analysis import SCORE, observe_run
from worker.learner.fleet_evaluation import Evaluation
from worker.models import parse_run


def test_scenarios_are_valid_runs_in_time_order_and_seeded() -> None:
    for make in scenarios.SCENARIOS.values():
        runs = make(7)
        assert all(parse_run(orjson.dumps(run)) for run in runs[:200])
        starts = [run["started_at"] for run in runs]
        assert starts == sorted(starts)
    assert scenarios.stationary(7) == scenarios.stationary(7) != scenarios.stationary(8)


def test_drift_triples_half_the_agents_tokens_half_way() -> None:
    """Per call name an agent kept, its calls' tokens triple after the change (for the
    changed half) or stay (the others); the changed half also calls other names."""
    by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in scenarios.drift(3):
        by_agent[run["agent_id"]].append(run)
    assert len(by_agent) == 40 and all(len(runs) == 80 for runs in by_agent.values())
    changed = kept = 0
    for runs in by_agent.values():
        before, after = tokens_by_name(runs[:40]), tokens_by_name(runs[40:])
        ratios = [mean(after[n]) / mean(before[n]) for n in before.keys() & after.keys()]
        if before.keys() != after.keys():
            changed += 1
            assert all(2.2 < ratio < 4 for ratio in ratios), ratios
        else:
            kept += 1
            assert all(0.75 < ratio < 1.33 for ratio in ratios), ratios
    assert changed == kept == 20


def test_drift_every_changes_every_agent_half_way() -> None:
    by_agent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in scenarios.drift_every(3):
        by_agent[run["agent_id"]].append(run)
    assert len(by_agent) == 40
    for runs in by_agent.values():
        before, after = tokens_by_name(runs[:40]), tokens_by_name(runs[40:])
        assert before.keys() != after.keys()
        ratios = [mean(after[n]) / mean(before[n]) for n in before.keys() & after.keys()]
        assert all(2.2 < ratio < 4 for ratio in ratios), ratios


def tokens_by_name(runs: list[dict[str, Any]]) -> dict[str, list[int]]:
    tokens: dict[str, list[int]] = defaultdict(list)
    for run in runs:
        for call in run["calls"]:
            if call["kind"] == "llm":
                tokens[call["name"]].append(call["output_tokens"])
    return tokens


def test_cold_start_newcomers_use_the_fleets_names_and_models() -> None:
    runs = scenarios.cold_start(5)
    counts = Counter(run["agent_id"] for run in runs)
    newcomers = [agent for agent in counts if agent.startswith("new-")]
    assert len(newcomers) == 1_000 and all(counts[a] == 5 for a in newcomers)
    known = {
        (c["name"], c["model_name"])
        for run in runs
        if run["agent_id"].startswith("known-")
        for c in run["calls"]
        if c["kind"] == "llm"
    }
    new = {
        (c["name"], c["model_name"])
        for run in runs
        if run["agent_id"].startswith("new-")
        for c in run["calls"]
        if c["kind"] == "llm"
    }
    assert new <= known
    last_known = max(r["started_at"] for r in runs if r["agent_id"].startswith("known-"))
    first_new = min(r["started_at"] for r in runs if r["agent_id"].startswith("new-"))
    assert first_new > last_known


def test_boundary_agents_average_on_the_level_boundary() -> None:
    scores: dict[str, list[float]] = defaultdict(list)
    for run in scenarios.boundary(9):
        observations = observe_run(parse_run(orjson.dumps(run)), LearnerConfig())
        scores[run["agent_id"]] += [obs[SCORE] for obs in observations]
    means = [mean(values) for values in scores.values()]
    assert len(means) == 40
    assert abs(mean(means) - scenarios.BOUNDARY_SCORE) < 0.01
    assert sum(m < scenarios.BOUNDARY_SCORE for m in means) >= 8  # on both sides
    assert sum(m > scenarios.BOUNDARY_SCORE for m in means) >= 8


def test_each_llm_call_carries_the_median_its_tokens_were_drawn_around() -> None:
    """Half of a call's draws fall at or below its true median, and the learner reads the
    same run with or without the field (SPEC 2: fields not listed are ignored)."""
    runs = scenarios.stationary(11)
    calls = [c for run in runs for c in run["calls"] if c["kind"] == "llm"]
    below = sum(c["output_tokens"] <= c[scenarios.TRUE_MEDIAN] for c in calls) / len(calls)
    assert 0.47 < below < 0.53, below
    run = runs[0]
    bare = {
        **run,
        "calls": [{k: v for k, v in c.items() if k != scenarios.TRUE_MEDIAN} for c in run["calls"]],
    }
    assert bare != run and parse_run(orjson.dumps(bare)) == parse_run(orjson.dumps(run))


def test_the_known_distributions_bound_is_a_calibrated_p90_and_the_best_median() -> None:
    """The bound covers about 0.9 of the calls it scores, and its MAE is below that of any
    learner fed the same runs (corrected's here)."""
    runs = scenarios.drift(5)
    bound = known_distributions(runs)
    assert 0.88 < bound["osl_coverage"] < 0.92, bound
    evaluation = Evaluation(LearnerConfig())
    for run in runs:
        evaluation.learn(parse_run(orjson.dumps(run)))
    summary = evaluation.summary()
    assert bound["served"] == summary["scored"] / summary["calls"]
    assert bound["osl_mae"] < 0.8 * summary["osl_mae"], (bound, summary)
