"""The adaptive rule set as a whole: every piece off is exactly `corrected` (hints and tries,
byte for byte), each piece alone changes only what it is about, and stored observations
folded back give the state that learned the runs."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.runs import llm, run, tool
from worker.learner import (
    AdaptiveSettings,
    AgentState,
    Fleet,
    LearnerConfig,
    state_hints,
    trie_dict,
)
from worker.models import RunRecord

CORRECTED = LearnerConfig()
OFF = AdaptiveSettings.off()

call = st.builds(
    lambda kind, name, start, length, tokens, finished, model: (
        llm(name, start, start + length if finished else None, tokens, model)
        if kind == "llm"
        else tool(name, start, start + length)
    ),
    kind=st.sampled_from(["llm", "llm", "llm", "tool"]),
    name=st.sampled_from(["a", "b", "x/y", "critic"]),
    start=st.integers(0, 5_000),
    length=st.integers(0, 3_000),
    tokens=st.none() | st.integers(0, 5_000),
    finished=st.booleans(),
    model=st.sampled_from([None, "m1", "m2"]),
)
records = st.lists(
    st.builds(
        lambda calls, ended, agent: run(*calls, ended=ended, agent=agent),
        st.lists(call, max_size=10),
        st.none() | st.integers(0, 9_000),
        st.sampled_from(["p", "q"]),
    ),
    max_size=60,
)


def published(runs: list[RunRecord], config: LearnerConfig) -> dict[str, bytes]:
    """Per agent, its hints and trie as published (JSON bytes, without `generated_at`)."""
    fleet = Fleet(config)
    for record in runs:
        fleet.learn(record)
    out = {}
    for agent_id, state in sorted(fleet.states.items()):
        trie = trie_dict(agent_id, state, config)
        del trie["generated_at"]
        out[agent_id] = orjson.dumps([state_hints(state, config), trie])
    return out


def adaptive(**pieces: Any) -> LearnerConfig:
    """The adaptive rule set with every piece off but `pieces`."""
    return LearnerConfig(semantics="adaptive", adaptive=OFF.model_copy(update=pieces))


@settings(max_examples=80, deadline=None)
@given(runs=records)
def test_every_piece_off_is_the_corrected_rules_byte_for_byte(runs: list[RunRecord]) -> None:
    assert published(runs, adaptive()) == published(runs, CORRECTED)


def _without(value: Any, keys: set[str]) -> Any:
    """`value` with the given keys' values blanked, wherever they are."""
    if isinstance(value, dict):
        return {k: None if k in keys else _without(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def _differs_only_in(runs: list[RunRecord], config: LearnerConfig, keys: set[str]) -> None:
    got = {a: orjson.loads(v) for a, v in published(runs, config).items()}
    want = {a: orjson.loads(v) for a, v in published(runs, CORRECTED).items()}
    assert _without(got, keys) == _without(want, keys)


@settings(max_examples=60, deadline=None)
@given(runs=records)
def test_back_off_changes_only_upper_percentiles_and_osl(runs: list[RunRecord]) -> None:
    _differs_only_in(runs, adaptive(backoff_samples=1.0), {"p90", "p95", "osl"})


@settings(max_examples=60, deadline=None)
@given(runs=records, comparable=st.booleans())
def test_levels_change_only_levels(runs: list[RunRecord], comparable: bool) -> None:
    """Hysteresis, and comparable levels, change the levels and what is read off them."""
    config = adaptive(hysteresis=0.2, comparable_levels=comparable)
    _differs_only_in(runs, config, {"latency_sensitivity", "priority"})


@settings(max_examples=60, deadline=None)
@given(runs=records)
def test_priors_add_only_each_nodes_model(runs: list[RunRecord]) -> None:
    config = adaptive(priors=True)
    got = {a: orjson.loads(v) for a, v in published(runs, config).items()}
    want = {a: orjson.loads(v) for a, v in published(runs, CORRECTED).items()}
    for agent_id, (_, trie) in got.items():
        for node in trie["root"]["children"].values():
            assert set(node.pop("model") or "m") <= set("m12")
        assert "model" not in trie["root"]
        assert [got[agent_id][0], trie] == want[agent_id]


@settings(max_examples=60, deadline=None)
@given(runs=records, cut=st.integers(0, 60), pieces=st.sampled_from(["all", "shift"]))
def test_folding_stored_observations_equals_learning_the_runs(
    runs: list[RunRecord], cut: int, pieces: str
) -> None:
    """What the worker stores (a snapshot, then deltas of observations and models) rebuilds
    the very state that learned the runs, streaks, shifts and levels included."""
    settings_ = AdaptiveSettings(shift_calls=2, shift_min_samples=1)
    if pieces == "shift":
        settings_ = OFF.model_copy(update={"shift_calls": 2, "shift_min_samples": 1})
    config = LearnerConfig(semantics="adaptive", adaptive=settings_)
    runs = [r for r in runs if r.agent_id == "p"]
    live = AgentState()
    learned = [live.learn(record, config) for record in runs]
    cut = min(cut, len(runs))
    rebuilt = AgentState()
    for part in (learned[:cut], learned[cut:]):
        rebuilt.fold(
            [o for each in part for o in each.observations],
            len(part),
            None,
            config,
            [m for each in part for m in (each.models or [None] * len(each.observations))],
        )
        rebuilt = AgentState.from_bytes(rebuilt.to_bytes())
    assert rebuilt.to_bytes() == live.to_bytes()
    assert trie_dict("p", rebuilt, config)["root"] == trie_dict("p", live, config)["root"]


def test_a_state_learned_under_adaptive_round_trips_as_format_4() -> None:
    config = LearnerConfig(semantics="adaptive")
    state = AgentState()
    for tokens in (100, 120, 90, 2_000):
        state.learn(run(llm("a", 0, 500, tokens, "m1"), llm("b", 600, 900, 50, "m2")), config)
    blob = state.to_bytes()
    assert blob[0] == 4
    again = AgentState.from_bytes(blob)
    assert again == state and again.to_bytes() == blob
    assert again.adaptive is not None and again.adaptive.models == {"a": {"m1": 4}, "b": {"m2": 4}}
    assert AgentState.from_bytes(AgentState().to_bytes()).adaptive is None  # corrected: 3
