"""AgentState properties: split-and-merge equals learning all, bytes round trip, limits."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.compare import assert_matches
from tests.unit.runs import llm, run, tool
from worker.demo_workload import generate_runs
from worker.learner import AgentState, LearnerConfig, build_trie
from worker.models import RunRecord, parse_run

CONFIGS = [LearnerConfig(), LearnerConfig(semantics="nemo-flow")]

call = st.builds(
    lambda kind, name, start, length, tokens, finished: (
        llm(name, start, start + length if finished else None, tokens)
        if kind == "llm"
        else tool(name, start, start + length)
    ),
    kind=st.sampled_from(["llm", "llm", "tool"]),
    name=st.sampled_from(["a", "b", "x/y", "critic"]),
    start=st.integers(0, 5_000),
    length=st.integers(0, 3_000),
    tokens=st.none() | st.integers(0, 5_000),
    finished=st.booleans(),
)
runs = st.lists(
    st.builds(
        lambda calls, ended: run(*calls, ended=ended),
        st.lists(call, max_size=12),
        st.none() | st.integers(0, 9_000),
    ),
    max_size=40,
)


def learn_all(records: list[RunRecord], config: LearnerConfig) -> AgentState:
    state = AgentState()
    for record in records:
        state.learn(record, config)
    return state


def trie_json(state: AgentState, config: LearnerConfig) -> dict:
    return build_trie("agent", state, config).model_dump(exclude={"generated_at"})


@settings(max_examples=60, deadline=None)
@given(
    records=runs, cuts=st.lists(st.integers(0, 40), max_size=4), semantics=st.sampled_from([0, 1])
)
def test_learning_does_not_depend_on_how_runs_are_split(records, cuts, semantics) -> None:
    config = CONFIGS[semantics]
    bounds = sorted({0, len(records), *(min(c, len(records)) for c in cuts)})
    parts = [learn_all(records[a:b], config) for a, b in itertools.pairwise(bounds)]
    merged = AgentState()
    for part in parts:
        merged.merge(AgentState.from_bytes(part.to_bytes()), config)
    whole = learn_all(records, config)
    assert merged == whole
    assert merged.runs == whole.runs == len(records)
    assert_matches(trie_json(merged, config), trie_json(whole, config))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(150, 600))
def test_split_and_merge_past_the_exact_limit(seed: int, count: int) -> None:
    config = CONFIGS[0]
    records = [parse_run(orjson.dumps(r)) for r in generate_runs(count, 1, seed=seed)]
    halves = learn_all(records[: count // 3], config).merge(
        learn_all(records[count // 3 :], config)
    )
    whole = learn_all(records, config)
    assert halves == whole
    assert trie_json(halves, config) == trie_json(whole, config)


@settings(max_examples=60, deadline=None)
@given(records=runs)
def test_state_survives_bytes_round_trip(records) -> None:
    config = CONFIGS[0]
    state = learn_all(records, config)
    blob = state.to_bytes()
    restored = AgentState.from_bytes(blob)
    assert restored == state
    assert restored.to_bytes() == blob
    assert trie_json(restored, config) == trie_json(state, config)
    for record in records:  # duplicates are still recognised after the round trip
        assert not restored.learn(record, config)


def test_merging_states_that_share_a_run_is_refused() -> None:
    shared = run(llm("a", 0, 10))
    with pytest.raises(ValueError, match="double-count"):
        learn_all([shared], CONFIGS[0]).merge(learn_all([shared], CONFIGS[0]))


def test_unknown_format_version_is_refused() -> None:
    blob = bytearray(AgentState().to_bytes())
    blob[0] = 99
    with pytest.raises(ValueError, match="version 99"):
        AgentState.from_bytes(bytes(blob))


def test_nodes_after_counts_new_llm_names_only() -> None:
    state = learn_all([run(llm("a", 0, 10))], CONFIGS[0])
    assert state.node_count == 2
    assert state.nodes_after(run(llm("a", 0, 1), llm("b", 2, 3), llm("c", 4, None))) == 3


def test_state_is_compact_for_a_busy_agent() -> None:
    config = LearnerConfig(dedupe_window=0)
    records = [parse_run(orjson.dumps(r)) for r in generate_runs(5_000, 1, seed=3)]
    size = len(learn_all(records, config).to_bytes())
    assert size < 64_000, size
