"""AgentState properties: split-and-merge equals learning all, bit for bit; bytes round trip."""

from __future__ import annotations

import itertools
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.compare import assert_matches
from tests.unit.learner.states import statistics_bytes
from tests.unit.runs import llm, run, tool
from worker.demo_workload import generate_runs
from worker.learner import AgentState, LearnerConfig, build_trie, trie_dict
from worker.learner.exact_sums import exact_mean, fast_units, load_exact
from worker.learner.nodes import units_of
from worker.learner.state import StateFormatError, legacy_run_ids
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
    for part in reversed(parts):  # merge order does not matter either
        merged.merge(AgentState.from_bytes(part.to_bytes()))
    whole = learn_all(records, config)
    assert merged.runs == whole.runs == len(records)
    assert statistics_bytes(merged) == statistics_bytes(whole)  # bit for bit
    assert_matches(trie_json(merged, config), trie_json(whole, config))


@settings(max_examples=40, deadline=None)
@given(records=runs, cut=st.integers(0, 40))
def test_folding_observations_equals_learning_the_runs(records, cut) -> None:
    """What the worker stores per commit (observations) rebuilds the very same state."""
    config = CONFIGS[0]
    live = AgentState()
    observations = [live.learn(record, config).observations for record in records]
    rebuilt = AgentState()
    cut = min(cut, len(records))
    rebuilt.fold([o for batch in observations[:cut] for o in batch], runs=cut)
    rebuilt = AgentState.from_bytes(rebuilt.to_bytes())
    rebuilt.fold([o for batch in observations[cut:] for o in batch], runs=len(records) - cut)
    assert rebuilt.to_bytes() == live.to_bytes()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), count=st.integers(150, 600))
def test_split_and_merge_past_the_exact_limit(seed: int, count: int) -> None:
    config = CONFIGS[0]
    records = [parse_run(orjson.dumps(r)) for r in generate_runs(count, 1, seed=seed)]
    halves = learn_all(records[count // 3 :], config).merge(
        learn_all(records[: count // 3], config)
    )
    whole = learn_all(records, config)
    assert statistics_bytes(halves) == statistics_bytes(whole)
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


def test_format_1_values_are_read_with_their_run_ids() -> None:
    """A value written by the previous format (statistics with float sums, then run ids)."""
    records = [run(llm("a", 0, 100, 7), llm("b", 150, 400, 9)) for _ in range(3)]
    state = learn_all(records, CONFIGS[0])
    root, children = orjson.loads(state.to_bytes()[5:])[1:3]

    def float_sums(node):  # format 1 stored each score sum as a plain float
        for group in [node[0]] + [g for _, g in node[1]]:
            count, total = group[3]
            group[3] = [count, exact_mean(*load_exact(total), 1)]
        return node

    body = orjson.dumps([3, float_sums(root), {n: float_sums(c) for n, c in children.items()}])
    ids = b"".join(r.id.bytes for r in records)
    blob = struct.pack("<BI", 1, len(body)) + body + ids
    assert legacy_run_ids(blob) == ids
    restored = AgentState.from_bytes(blob)
    # these scores (0, 1) sum exactly as floats too; format 1 kept no recent accuracy
    assert statistics_bytes(restored) == statistics_bytes(state)
    assert not restored.recent.pairs
    assert legacy_run_ids(state.to_bytes()) == b""


@pytest.mark.parametrize(
    "blob", [b"", b"\x02\x00", b"\x02\x05\x00\x00\x00[1,2", b"\x02\x02\x00\x00\x00{}"]
)
def test_unreadable_bytes_are_a_clear_error(blob: bytes) -> None:
    with pytest.raises(StateFormatError, match="unreadable agent state"):
        AgentState.from_bytes(blob)


def test_unknown_format_version_is_refused() -> None:
    blob = bytearray(AgentState().to_bytes())
    blob[0] = 99
    with pytest.raises(ValueError, match="version 99"):
        AgentState.from_bytes(bytes(blob))


def test_size_after_counts_new_llm_names_and_call_indices_only() -> None:
    state = learn_all([run(llm("a", 0, 10))], CONFIGS[0])
    assert (state.node_count, state.prediction_count) == (2, 2)  # root[1], a[1]
    # a twice (index 2 is new at a and at the root), b once, c unfinished, a tool call
    after = state.size_after(
        run(llm("a", 0, 1), llm("b", 2, 3), llm("a", 4, 5), llm("c", 4, None), tool("t", 6, 7))
    )
    assert after == (3, 5)  # root[1, 2], a[1, 2], b[1]


def test_prediction_count_is_what_the_trie_publishes() -> None:
    runs = [parse_run(orjson.dumps(r)) for r in generate_runs(300, 5, seed=4, llm_calls=(1, 6))]
    config = LearnerConfig()
    states: dict[str, AgentState] = {}
    for record in runs:
        state = states.setdefault(record.agent_id, AgentState())
        expected = state.size_after(record)
        state.learn(record, config)
        assert (state.node_count, state.prediction_count) == expected
    for agent, state in states.items():
        trie = trie_dict(agent, state, config)
        nodes = [trie["root"], *trie["root"]["children"].values()]
        assert state.node_count == len(nodes)
        assert state.prediction_count == sum(len(n["predictions_by_call_index"]) for n in nodes)
        again = AgentState.from_bytes(state.to_bytes())  # high is restored from the indices
        assert again.prediction_count == state.prediction_count
        merged = AgentState().merge(again)
        assert merged.prediction_count == state.prediction_count


def test_state_is_compact_for_a_busy_agent() -> None:
    config = LearnerConfig()
    records = [parse_run(orjson.dumps(r)) for r in generate_runs(5_000, 1, seed=3)]
    size = len(learn_all(records, config).to_bytes())
    assert size < 64_000, size


def test_scores_become_the_same_units_in_c_as_one_by_one() -> None:
    usual = [0.0, 0.5, 1.0, 1 / 3, 0.1666666666666667, 2**-75]
    assert units_of(usual) == [fast_units(v) for v in usual]
    assert None not in units_of(usual)
    tiny = [0.5, 2**-140]  # not a whole number of 2**-128: every value the slow way
    assert units_of(tiny) == [fast_units(0.5), None]
