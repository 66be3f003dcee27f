"""An agent's recent accuracy: bounded, serialized with the state, rebuilt exactly from deltas."""

from __future__ import annotations

import itertools
import struct
import tracemalloc

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.learner.states import statistics_bytes
from tests.unit.learner.test_state import runs as random_runs
from tests.unit.runs import llm, run
from worker.learner import AgentState, LearnerConfig
from worker.learner.accuracy import WINDOW, RecentAccuracy
from worker.learner.state import StateFormatError
from worker.models import RunRecord

CONFIGS = [LearnerConfig(), LearnerConfig(semantics="nemo-flow")]


def test_the_window_holds_the_last_100_scored_calls() -> None:
    window = RecentAccuracy()
    assert window.summary() is None
    window.extend([(True, 4.0)] * 30 + [(False, 1.0)] * 90)  # the first 20 fall out
    assert window.summary() == {"scored": WINDOW, "osl_coverage": 0.1, "osl_mae": 1.3}
    assert RecentAccuracy.load(orjson.loads(orjson.dumps(window.dump()))) == window


def test_a_full_window_is_kept_in_columns_of_a_few_kilobytes() -> None:
    """Up to 8,192 agents stay decoded: a deque of (bool, float) tuples took ~9.3 KB per
    full window."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        windows = []
        for i in range(200):
            window = RecentAccuracy()
            for j in range(30):  # runs of 4 scored calls
                window.extend([(j % 3 == 0, float(i * j % 17) + 0.5 + k) for k in range(4)])
            windows.append(window)
        per_window = (tracemalloc.get_traced_memory()[0] - before) / len(windows)
    finally:
        tracemalloc.stop()
    assert all(w.summary()["scored"] == WINDOW for w in windows)  # type: ignore[index]
    assert per_window <= 4_000, per_window


def test_ints_and_floats_are_dumped_as_they_were_given() -> None:
    window = RecentAccuracy([(True, 2), (False, 1.5)])
    assert orjson.dumps(window.dump()) == b"[[1,0],[2,1.5]]"
    assert window.pairs == [(True, 2), (False, 1.5)]
    assert RecentAccuracy.load([[1.0, 0], [2, 1.5]]).pairs == [(True, 2.0), (False, 1.5)]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([[1, 0], [1.0]], "different"),
        ([[1] * 101, [1.0] * 101], "too great"),
        ([[2], [1.0]], "0 or 1"),
        ([[1], [-1.0]], ">= 0"),
        ([[1], ["x"]], ">= 0"),
    ],
)
def test_a_bad_window_is_refused(data: list, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        RecentAccuracy.load(data)
    blob = AgentState().to_bytes()
    parts = orjson.loads(blob[5:])
    body = orjson.dumps([*parts[:3], data])
    with pytest.raises(StateFormatError, match=why):
        AgentState.from_bytes(struct.pack("<BI", 3, len(body)) + body)


def test_learning_updates_the_window_with_each_runs_scored_calls() -> None:
    state = AgentState()
    config = CONFIGS[0]
    first = state.learn(run(llm("a", 0, 10, 5), llm("a", 20, 30, 9)), config)
    assert first.recent_pairs() == [] and state.recent.summary() is None  # none served
    second = state.learn(run(llm("a", 0, 10, 7), llm("a", 20, 30, 9)), config)
    # a#1 had [5]: 7 > 5, |5 - 7| = 2; a#2 had [9]: 9 <= 9, 0
    assert second.recent_pairs() == [(False, 2.0), (True, 0.0)]
    assert state.recent.summary() == {"scored": 2, "osl_coverage": 0.5, "osl_mae": 1.0}


def test_format_2_states_are_read_with_an_empty_window() -> None:
    state = AgentState()
    for _ in range(3):
        state.learn(run(llm("a", 0, 10, 5)), CONFIGS[0])
    runs, root, children, _ = orjson.loads(state.to_bytes()[5:])
    body = orjson.dumps([runs, root, children])
    old = AgentState.from_bytes(struct.pack("<BI", 2, len(body)) + body)
    assert old.runs == 3 and not old.recent.pairs
    assert old.to_bytes()[0] == 3  # written back in the current format


def learned_commits(
    records: list[RunRecord], cuts: list[int], config: LearnerConfig
) -> tuple[AgentState, list[tuple[list, int, list]]]:
    """Learn the runs; per commit (runs between two cuts) what a delta stores: the
    observations, the number of runs, and the pairs the runs added to the window."""
    live = AgentState()
    learned = [live.learn(record, config) for record in records]
    bounds = sorted({0, len(records), *(min(c, len(records)) for c in cuts)})
    commits = []
    for a, b in itertools.pairwise(bounds):
        batch = learned[a:b]
        observations = [o for one in batch for o in one.observations]
        pairs = [p for one in batch for p in one.recent_pairs()]
        commits.append((observations, b - a, pairs))
    return live, commits


@settings(max_examples=60, deadline=None)
@given(
    records=random_runs,
    cuts=st.lists(st.integers(0, 40), max_size=5),
    snapshot=st.integers(0, 6),
    semantics=st.sampled_from([0, 1]),
)
def test_folding_deltas_gives_the_bytes_of_learning_the_runs(
    records: list[RunRecord], cuts: list[int], snapshot: int, semantics: int
) -> None:
    """A snapshot after some commits, then the later commits' deltas folded in, with the
    pairs they carry or scored again: the same bytes, window included, as the live state."""
    config = CONFIGS[semantics]
    live, commits = learned_commits(records, cuts, config)
    snapshot = min(snapshot, len(commits))
    for carried in (True, False):
        state = AgentState()
        for observations, runs, pairs in commits[:snapshot]:
            state.fold(observations, runs, pairs if carried else None)
        state = AgentState.from_bytes(state.to_bytes())
        for observations, runs, pairs in commits[snapshot:]:
            state.fold(observations, runs, pairs if carried else None)
        assert state.to_bytes() == live.to_bytes()
    # and the state keeps learning as the live one does after folding carried pairs
    more = run(llm("a", 0, 10, 3), llm("critic", 20, 40, 8))
    assert state.learn(more, config) == live.learn(more, config)
    assert state.to_bytes() == live.to_bytes()


def test_observations_cut_inside_a_run_are_refused() -> None:
    state = AgentState()
    learned = AgentState().learn(run(llm("a", 0, 10), llm("b", 20, 30)), CONFIGS[0])
    with pytest.raises(ValueError, match="inside a run"):
        state.fold(learned.observations[:1], 1)


def test_learning_without_evaluation_keeps_the_statistics_and_no_scores() -> None:
    off = LearnerConfig(evaluate=False)
    records = [run(llm("a", 0, 10, n), llm("b", 20, 30, 2 * n)) for n in range(1, 5)]
    scored, plain = AgentState(), AgentState()
    for record in records:
        scored.learn(record, CONFIGS[0])
        learned = plain.learn(record, off)
        assert learned.scores == [] and learned.level_flipped is False
    assert plain.recent.summary() is None and scored.recent.summary() is not None
    assert statistics_bytes(plain) == statistics_bytes(scored)
