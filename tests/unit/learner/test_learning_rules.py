"""SPEC sections 4-5 edge cases, one by one, in both semantics where they differ."""

from __future__ import annotations

import pytest

from tests.unit.runs import llm, run, tool
from worker.learner import (
    AgentState,
    Fleet,
    LearnerConfig,
    build_trie,
    default_hints,
    lookup_hints,
    trie_dict,
)
from worker.learner.analysis import (
    CALL_INDEX,
    INTERARRIVAL_MS,
    NAME,
    OUTPUT_TOKENS,
    REMAINING_CALLS,
    SCORE,
    logical_positions,
    observe_run,
    workflow_seconds,
)
from worker.learner.rounding import round_half_away, saturate_u32
from worker.learner.stats import Statistic
from worker.learner.trie import sensitivity_level
from worker.models import AgentHints

CORRECTED = LearnerConfig()
NEMO_FLOW = LearnerConfig(semantics="nemo-flow")


def learned(*runs, config=CORRECTED, agent="agent"):
    state = AgentState()
    for r in runs:
        state.learn(r, config)
    trie = build_trie(agent, state, config)
    return state, trie, default_hints(trie, config)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2.5, 3), (-2.5, -3), (0.5, 1), (1.4999, 1), (3.5, 4), (-0.5, -1), (0.0, 0)],
)
def test_round_half_away_from_zero(value: float, expected: int) -> None:
    assert round_half_away(value) == expected


def test_osl_rounds_half_way_up() -> None:
    # p90 of [100, 105] = 100 + 5 * 0.9 = 104.5; Python's round would give 104.
    _, trie, hints = learned(run(llm("a", 0, 100, tokens=100), llm("a", 200, 300, tokens=105)))
    assert trie.root.predictions_any_index.output_tokens.p90 == pytest.approx(104.5)
    assert hints.osl == 105


def test_sensitivity_level_rounds_half_way_up() -> None:
    score = Statistic()
    for value in (0.5, 0.75):  # mean 0.625 -> 0.625 * 4 = 2.5 -> 3 -> level 4
        score.add(value)
    assert sensitivity_level(score, 5) == 4


def test_unsigned_fields_saturate() -> None:
    assert saturate_u32(-12.0) == 0
    assert saturate_u32(float("nan")) == 0
    assert saturate_u32(1e12) == 2**32 - 1


def test_negative_mean_gap_saturates_iat_to_zero_under_nemo_flow() -> None:
    # b starts (0.5 s) before a ends (2 s): the crate's rule gives a gap of -1500 ms.
    overlapping = run(llm("a", 0, 2000, 10), llm("b", 500, 1000, 10), ended=2000)
    _, trie, hints = learned(overlapping, config=NEMO_FLOW)
    assert trie.root.predictions_any_index.interarrival_ms.mean == -1500
    assert hints.iat == 0
    # corrected: no LLM call starts after either ends, so there is no gap at all
    _, trie, hints = learned(overlapping, config=CORRECTED)
    assert trie.root.predictions_any_index.interarrival_ms.sample_count == 0
    assert hints.iat == 0


def test_negative_gap_truncates_toward_zero() -> None:
    calls = run(llm("a", 0, 2000.7), llm("b", 500, 1000))
    gaps = [o[INTERARRIVAL_MS] for o in observe_run(calls, NEMO_FLOW)]
    assert gaps == [-1500, None]


def test_corrected_gap_is_to_earliest_later_start_including_unfinished_calls() -> None:
    r = run(
        llm("a", 0, 1000),
        llm("b", 1300.9, None),  # unfinished, but it is the next LLM call to start
        llm("c", 1100.4, 2000),  # listed later, starts earlier than b
        llm("d", 500, 800),
    )
    observed = {o[NAME]: o[INTERARRIVAL_MS] for o in observe_run(r, CORRECTED)}
    assert observed == {"a": 100, "c": None, "d": 300}
    nemo = {o[NAME]: o[INTERARRIVAL_MS] for o in observe_run(r, NEMO_FLOW)}
    assert nemo == {"a": 300, "c": -1500, "d": None}


def test_name_with_slash_is_one_node() -> None:
    _, trie, _ = learned(run(llm("openai/gpt-4o", 0, 100, 5)))
    assert list(trie.root.children) == ["openai/gpt-4o"]
    assert trie.root.children["openai/gpt-4o"].children == {}


def test_unfinished_and_tool_calls_are_not_learned() -> None:
    r = run(tool("search", 0, 50), llm("a", 60, 100, 7), llm("a", 120, None), llm("a", 130, 200, 9))
    observations = observe_run(r, CORRECTED)
    assert [(o[CALL_INDEX], o[REMAINING_CALLS], o[OUTPUT_TOKENS]) for o in observations] == [
        (1, 1, 7),
        (2, 0, 9),
    ]
    _, trie, _ = learned(r)
    assert set(trie.root.children) == {"a"}
    assert set(trie.root.children["a"].predictions_by_call_index) == {"1", "2"}


def test_missing_ended_at_uses_latest_call_end() -> None:
    calls = (llm("a", 0, 1000, 1), llm("b", 1500, 4000, 2), tool("t", 4000, 4500))
    assert workflow_seconds(run(*calls)) == 4.5
    assert workflow_seconds(run(*calls, ended=2000)) == 2.0
    assert observe_run(run(*calls), CORRECTED) == observe_run(run(*calls, ended=4500), CORRECTED)


def test_run_without_any_end_has_zero_duration() -> None:
    assert workflow_seconds(run(llm("a", 0, None))) == 0.0
    assert observe_run(run(llm("a", 0, None)), CORRECTED) == []


def test_tool_only_run_counts_but_gives_no_hints() -> None:
    state, trie, hints = learned(run(tool("calculator", 0, 1000), ended=1000))
    assert state.runs == 1
    assert hints is None
    assert trie.root.predictions_any_index is None
    assert trie.root.children == {}


def test_parallel_within_one_second_only_seen_by_corrected() -> None:
    r = run(llm("a", 100, 600), llm("b", 300, 900), llm("c", 1200, 1500))
    corrected = [o[SCORE] for o in observe_run(r, CORRECTED)]
    nemo = [o[SCORE] for o in observe_run(r, NEMO_FLOW)]
    # corrected: a and b overlap and share step 0. nemo-flow floors to whole seconds:
    # a is (0, 0) and b starts at 0, not strictly below 0, so all three are sequential.
    spans = [(100, 600), (300, 900), (1200, 1500)]
    assert logical_positions(spans) == ([0, 0, 1], [2, 1])
    assert logical_positions([(0, 0), (0, 0), (1, 1)]) == ([0, 1, 2], [1, 1, 1])
    assert corrected != nemo


def test_parallel_across_seconds_seen_by_both() -> None:
    spans_ms = [(1200, 3500), (2100, 4000), (5000, 6000)]
    assert logical_positions(spans_ms) == ([0, 0, 1], [2, 1])
    assert logical_positions([(1, 3), (2, 4), (5, 6)]) == ([0, 0, 1], [2, 1])
    r = run(*(llm(n, s, e) for n, (s, e) in zip("abc", spans_ms, strict=True)), ended=6000)
    scores = [o[SCORE] for o in observe_run(r, CORRECTED)]
    assert scores == [o[SCORE] for o in observe_run(r, NEMO_FLOW)]


def test_positions_sort_by_start_stably() -> None:
    assert logical_positions([(5, 6), (0, 2), (1, 3), (5, 7)]) == ([1, 0, 0, 1], [2, 2])


def test_score_is_half_when_all_calls_are_equal() -> None:
    r = run(llm("a", 0, 100), llm("b", 0, 100), ended=100)
    assert [o[SCORE] for o in observe_run(r, CORRECTED)] == [0.5, 0.5]


def test_parallel_weight_lowers_parallel_calls() -> None:
    weighted = LearnerConfig(weights={"critical": 0, "fanout": 0, "position": 0, "parallel": 1})
    r = run(llm("a", 0, 100), llm("b", 50, 150), llm("c", 200, 300), ended=300)
    assert [o[SCORE] for o in observe_run(r, weighted)] == [0.0, 0.0, 1.0]


def test_duplicate_run_id_is_not_counted_again() -> None:
    first = run(llm("a", 0, 100, 10))
    fleet = Fleet(CORRECTED)
    assert fleet.learn(first) is not None
    state = fleet.states["agent"]
    before = build_trie("agent", state, CORRECTED).model_dump(exclude={"generated_at"})
    assert fleet.learn(first) is None
    assert state.runs == 1
    assert build_trie("agent", state, CORRECTED).model_dump(exclude={"generated_at"}) == before


def test_lookup_falls_back_along_the_path() -> None:
    _state, trie, defaults = learned(
        run(llm("plan", 0, 100, 50), llm("write", 200, 300, 500), llm("write", 400, 500, 700))
    )
    published = trie.model_dump(mode="json")
    deep = lookup_hints(published, ["write"], 2, CORRECTED)
    assert deep["prefix_id"] == "agent-d1"
    assert deep["osl"] == 700 and deep["total_requests"] == 0 + 2
    # unknown index at a known node: that node's any-index prediction
    any_index = lookup_hints(published, ["plan"], 7, CORRECTED)
    assert any_index["osl"] == 50
    # unknown name: the root's prediction for the index
    root_only = lookup_hints(published, ["nope"], 1, CORRECTED)
    root_one = trie.root.predictions_by_call_index["1"]
    assert root_only["osl"] == round_half_away(root_one.output_tokens.p90)
    assert lookup_hints(published, [], 1, CORRECTED)["prefix_id"] == "agent-d0"
    assert defaults.prefix_id == "default"


def test_lookup_reads_the_worker_publish_form() -> None:
    state, trie, _ = learned(run(llm("plan", 0, 100, 50), llm("write", 200, 300, 500)))
    from_model = lookup_hints(trie.model_dump(mode="json"), ["write"], 1, CORRECTED)
    from_publish = lookup_hints(trie_dict("agent", state, CORRECTED), ["write"], 1, CORRECTED)
    assert from_model == from_publish
    assert AgentHints.model_validate(from_publish).osl == 500


def test_lookup_without_predictions_gives_no_hints() -> None:
    _, trie, _ = learned(run(tool("t", 0, 1)))
    assert lookup_hints(trie.model_dump(mode="json"), ["a"], 1, CORRECTED) is None


def test_priority_and_total_requests_of_default_hints() -> None:
    _, trie, hints = learned(run(llm("a", 0, 100, 1), llm("a", 100, 200, 1), llm("a", 200, 300, 1)))
    p = trie.root.predictions_any_index
    assert hints.total_requests == round_half_away(p.remaining_calls.mean) + 1 == 2
    assert hints.priority == 5 - p.latency_sensitivity
    assert hints.latency_sensitivity == float(p.latency_sensitivity)
