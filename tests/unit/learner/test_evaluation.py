"""SPEC 10 scoring: hand-worked runs, and every score against the SPEC 5 lookup in the trie."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings

from tests.unit.learner.test_state import runs as random_runs
from tests.unit.runs import llm, run
from worker.demo_workload import generate_runs
from worker.learner import AdaptiveSettings, AgentState, LearnerConfig, trie_dict
from worker.learner.analysis import (
    CALL_INDEX,
    INTERARRIVAL_MS,
    NAME,
    OUTPUT_TOKENS,
    REMAINING_CALLS,
    observe_run,
)
from worker.learner.fleet_evaluation import Evaluation
from worker.learner.rounding import round_half_away
from worker.models import RunRecord, parse_run

CORRECTED, NEMO_FLOW = LearnerConfig(), LearnerConfig(semantics="nemo-flow")
ADAPTIVE = LearnerConfig(semantics="adaptive")
#: decay at a hair trigger, so that random runs shift often
SHIFTING = LearnerConfig(
    semantics="adaptive", adaptive=AdaptiveSettings(shift_calls=1, shift_min_samples=1)
)


def hand_worked_runs() -> list[RunRecord]:
    """Agent b's one run, then three of agent a (times in ms; every call 100 ms long)."""
    return [
        run(llm("q", 0, 100, 1000), ended=100, agent="b"),
        # a1: p (10 tokens, gap 100 to w, 1 remaining), w (100, no gap, 0 remaining)
        run(llm("p", 0, 100, 10), llm("w", 200, 300, 100), ended=300),
        # a2: p (20, gap 100, 2 left), w#1 (100, gap 100, 1 left), w#2 (50, no gap, 0 left)
        run(llm("p", 0, 100, 20), llm("w", 200, 300, 100), llm("w", 400, 500, 50), ended=500),
        # a3: p (15, gap 150, 1 left), w (100, no gap, 0 left)
        run(llm("p", 0, 100, 15), llm("w", 250, 350, 100), ended=350),
    ]


def test_a_hand_worked_evaluation() -> None:
    evaluation = Evaluation(LearnerConfig(scale=2))  # scale 2: level 2 from a mean of 0.5
    for record in hand_worked_runs():
        evaluation.learn(record)
    report = evaluation.summary()
    # b1, a1: nothing learned for their agent yet: 3 calls of source none. a2 against a1:
    #   p#1 has [10]: osl 10, p50 10; 20 > 10 not covered, |10 - 20| = 10; gaps [100] vs
    #     100: 0; remaining [1] vs 2: 1
    #   w#1 has [100]: 100 <= 100 covered, error 0; no gap sample: no iat; [0] vs 1: 1
    #   w#2 is new: w's any-index prediction ([100], remaining [0]): 50 covered, error 50,
    #     no gap; remaining 0 vs 0: 0
    # a3 against a1 + a2:
    #   p#1 has [10, 20]: p50 15, p90 10 + 10 * 0.9 = 19 (osl 19); 15 covered, error 0;
    #     gaps [100, 100] vs 150: 50; remaining [1, 2] vs 1: 0.5
    #   w#1 has [100, 100]: osl 100, p50 100; 100 covered, error 0; [0, 1] vs 0: 0.5
    assert report["runs"] == 4 and report["calls"] == 8
    assert report["sources"] == {"trie": 5, "agent_default": 0, "none": 3}
    assert report["served"] == 5 / 8 and report["scored"] == 5
    assert report["osl_coverage"] == 4 / 5
    assert report["osl_mae"] == (10 + 0 + 50 + 0 + 0) / 5
    assert report["iat_mae_ms"] == (0 + 50) / 2
    assert report["remaining_mae"] == pytest.approx((1 + 1 + 0 + 0.5 + 0.5) / 5, abs=1e-15)
    # tau-b of (p50, y): A(10, 20) B(100, 100) C(100, 50) D(15, 15) E(100, 100): concordant
    # AB AC AE BD CD DE, discordant AD; tied in x BC BE CE (n1 = 3), in y BE (n2 = 1):
    # (6 - 1) / sqrt((10 - 3) * (10 - 1))
    assert report["osl_tau"] == pytest.approx(5 / math.sqrt(63), rel=1e-12)
    # sensitivity scores (critical 0.5, fanout 0.3, position 0.2; min-max per run):
    # a1 p 1, w 0: mean 0.5, level round(0.5) + 1 = 2 (b1's level is its own); a2 p 1,
    # w#1 1/6, w#2 0: mean 13/30 < 0.5, level 1: a flip; a3 p 1, w 0: mean 19/42, still 1
    assert report["level_flips_per_100_runs"] == 100 / 4

    default = report["baselines"]["agent_default"]
    # a2 against a's root [10, 100]: p50 55, p90 10 + 90 * 0.9 = 91; remaining [1, 0]: 0.5;
    #   gaps [100]: 100. p: 20 covered, 35; 0; 1.5. w#1: 100 > 91, 45; 0; 0.5. w#2: 50
    #   covered, 5; no gap; 0.5
    # a3 against [10, 20, 50, 100, 100]: p50 50, p90 100 + 0 * 0.6; remaining mean 0.8;
    #   gaps 100. p: 15 covered, 35; 50; 0.2. w: 100 covered, 50; no gap; 0.8
    assert default["scored"] == 5
    assert default["osl_coverage"] == 4 / 5
    assert default["osl_mae"] == (35 + 45 + 5 + 35 + 50) / 5
    assert default["iat_mae_ms"] == pytest.approx(50 / 3, rel=1e-15)
    assert default["remaining_mae"] == pytest.approx((1.5 + 0.5 + 0.5 + 0.2 + 0.8) / 5)
    # (55, 20) (55, 100) (55, 50) (50, 15) (50, 100): across the two p50s concordant 3,
    # discordant 2; tied in x 3 + 1, in y 1: 1 / sqrt((10 - 4) * (10 - 1))
    assert default["osl_tau"] == pytest.approx(1 / math.sqrt(54), rel=1e-12)

    fleet = report["baselines"]["fleet"]
    # the fleet learned b1 first, so a1 is served: [1000]: osl and p50 1000, remaining 0.
    #   p: 10 covered, 990; remaining 1. w: 100 covered, 900; 0
    # a2 against [10, 100, 1000]: p50 100, p90 100 + 900 * 0.8 = 820; remaining 1/3; gaps
    #   100. p: 80, iat 0, 5/3. w#1: 0, iat 0, 2/3. w#2: 50, 1/3. All covered.
    # a3 against [10, 20, 50, 100, 100, 1000]: p50 75, p90 100 + 900 * 0.5 = 550;
    #   remaining 2/3. p: 60, iat 50, 1/3. w: 25, 2/3. All covered.
    assert fleet["scored"] == 7 and fleet["osl_coverage"] == 1.0
    assert fleet["osl_mae"] == pytest.approx((990 + 900 + 80 + 0 + 50 + 60 + 25) / 7)
    assert fleet["iat_mae_ms"] == pytest.approx(50 / 3, rel=1e-15)
    assert fleet["remaining_mae"] == pytest.approx(2 / 3, rel=1e-15)
    # x: 1000 (y 10, 100), 100 (20, 100, 50), 75 (15, 100): concordant 6, discordant 7;
    # tied in x 1 + 3 + 1, in y 3 (the three 100s): -1 / sqrt((21 - 5) * (21 - 3))
    assert fleet["osl_tau"] == pytest.approx(-1 / math.sqrt(288), rel=1e-12)

    # both semantics learn the same tokens and (sequential calls) the same gaps here
    assert report["baselines"]["nemo-flow"] == {
        key: report[key] for key in report["baselines"]["nemo-flow"]
    }


def test_each_semantics_scores_its_own_interarrival() -> None:
    # y starts inside x: corrected, x has no next call starting after it ends (no gap);
    # nemo-flow, the next LLM entry starts 200 ms (then 150 ms) before x ends
    runs = [
        run(llm("x", 0, 300, 10), llm("y", 100, 200, 10), ended=300),
        run(llm("x", 0, 300, 10), llm("y", 150, 200, 10), ended=300),
    ]
    reports = {}
    for config in (CORRECTED, NEMO_FLOW):
        evaluation = Evaluation(config)
        for record in runs:
            evaluation.learn(record)
        reports[config.semantics] = evaluation.summary()
    # corrected: no call has a gap: undefined; nemo-flow: x#1 has [-200], gets -150: 50
    assert reports["corrected"]["iat_mae_ms"] is None
    assert reports["nemo-flow"]["iat_mae_ms"] == 50.0
    assert reports["corrected"]["baselines"]["nemo-flow"]["iat_mae_ms"] == 50.0
    assert reports["nemo-flow"]["baselines"]["corrected"]["iat_mae_ms"] is None
    # the same tokens, 10 each: osl 10 covers all; p50 10, no error; tau undefined
    for report in reports.values():
        assert (report["osl_coverage"], report["osl_mae"], report["osl_tau"]) == (1.0, 0.0, None)


def test_duplicates_are_neither_learned_nor_scored() -> None:
    records = hand_worked_runs()
    evaluation = Evaluation(CORRECTED)
    for record in [*records, records[2], records[1]]:
        evaluation.learn(record)
    assert evaluation.fleet.learn(records[3]) is None
    report = evaluation.summary()
    assert report["runs"] == 4 and report["calls"] == 8
    assert report["baselines"]["fleet"]["scored"] == 7


def test_an_empty_input_reports_nothing_scored() -> None:
    report = Evaluation(CORRECTED).summary()
    assert report["runs"] == report["calls"] == report["scored"] == 0
    assert report["served"] is None and report["osl_coverage"] is None
    assert report["level_flips_per_100_runs"] is None


def lookup_scores(state: AgentState, record: RunRecord, config: LearnerConfig) -> list[tuple]:
    """Every call of `record` scored against the published trie of `state`, as a router
    would look it up (SPEC 5: root, then the node [name]; the index's prediction, else the
    node's any-index one; the deepest found)."""
    root = trie_dict("agent", state, config)["root"]
    scores = []
    for obs in observe_run(record, config):
        key = str(obs[CALL_INDEX])
        found = root["predictions_by_call_index"].get(key) or root["predictions_any_index"]
        node = root["children"].get(obs[NAME])
        if node is not None:
            own = node["predictions_by_call_index"].get(key) or node["predictions_any_index"]
            found = own or found
        if found is None:
            scores.append(("none",))
            continue
        tokens, gaps = found["output_tokens"], found["interarrival_ms"]
        y, gap = obs[OUTPUT_TOKENS], obs[INTERARRIVAL_MS]
        scores.append(
            (
                "trie",
                y <= round_half_away(tokens["p90"]),
                abs(tokens["p50"] - y),
                None if gap is None or not gaps["sample_count"] else abs(gaps["mean"] - gap),
                abs(found["remaining_calls"]["mean"] - obs[REMAINING_CALLS]),
            )
        )
    return scores


def learned_scores(state: AgentState, record: RunRecord, config: LearnerConfig) -> list[tuple]:
    return [
        ("none",)
        if s.source == "none"
        else (s.source, s.covered, s.osl_error, s.iat_error_ms, s.remaining_error)
        for s in state.learn(record, config).scores
    ]


@settings(max_examples=80, deadline=None)
@given(records=random_runs)
def test_every_score_is_the_trie_lookups_bit_for_bit(records: list[RunRecord]) -> None:
    """Under every rule set: the adaptive one's back-off osl is the published one."""
    for config in (CORRECTED, NEMO_FLOW, ADAPTIVE, SHIFTING):
        state = AgentState()
        for record in records:
            want = lookup_scores(state, record, config)
            assert learned_scores(state, record, config) == want


@pytest.mark.parametrize("config", [CORRECTED, NEMO_FLOW, ADAPTIVE])
def test_scores_stay_the_trie_lookups_past_the_exact_limit(config: LearnerConfig) -> None:
    """Groups beyond 100 samples predict from the bucket sketch: the same values."""
    start = 1_780_000_000_000_000_000
    runs = generate_runs(400, 1, seed=9, llm_calls=(1, 8), start_ns=start)
    state = AgentState()
    for i, raw in enumerate(runs):
        record = parse_run(orjson.dumps(raw))
        if i % 7 == 0 or i > 380:  # building the trie each run would be slow
            want = lookup_scores(state, record, config)
            assert learned_scores(state, record, config) == want
        else:
            state.learn(record, config)
    assert max(n.any_index.output_tokens.count for n in state.children.values()) > 100
    restored = AgentState.from_bytes(state.to_bytes())  # its scorer rebuilt from the bytes
    record = parse_run(orjson.dumps(next(generate_runs(1, 1, seed=10, start_ns=start))))
    assert learned_scores(restored, record, config) == lookup_scores(state, record, config)
