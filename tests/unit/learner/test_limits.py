"""Per-record limits (SPEC 2): size, calls, names, trie nodes and predictions, and the
published size they bound."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.unit.runs import llm, run
from worker.demo_workload import generate_runs
from worker.errors import RecordError, SettingsError
from worker.learner import AgentState, LearnerConfig, trie_dict
from worker.learner.limits import (
    Limits,
    check_publishable,
    check_run,
    check_size,
    check_trie,
    trie_bytes_bound,
)
from worker.models import parse_run

START = 1_700_000_000_000_000_000


def run_dict(seed: int = 1) -> dict[str, Any]:
    return next(iter(generate_runs(1, 1, seed=seed, start_ns=START)))


def test_size_limits() -> None:
    limits = Limits(max_record_bytes=10)
    check_size(b"0123456789", limits)
    with pytest.raises(RecordError) as info:
        check_size(b"01234567890", limits)
    assert info.value.reason == "too_large"
    with pytest.raises(RecordError) as info:
        check_size(None, limits)
    assert info.value.reason == "schema"


def test_calls_and_name_limits() -> None:
    run = parse_run(orjson.dumps(run_dict()))
    check_run(run, Limits())
    with pytest.raises(RecordError, match="max_calls_per_run") as info:
        check_run(run, Limits(max_calls_per_run=1))
    assert info.value.reason == "limits"
    with pytest.raises(RecordError, match="agent_id is 10 characters"):
        check_run(run, Limits(max_name_length=3))
    data = run_dict()
    data["calls"][1]["name"] = "n" * 50
    with pytest.raises(RecordError, match=r"calls\.1\.name is 50 characters"):
        check_run(parse_run(orjson.dumps(data)), Limits(max_name_length=20))


def test_node_limit_counts_new_names_only() -> None:
    run = parse_run(orjson.dumps(run_dict()))
    state = AgentState()
    needed, _ = state.size_after(run)
    check_trie(state, run, Limits(max_trie_nodes=needed))
    with pytest.raises(RecordError, match="max_trie_nodes"):
        check_trie(state, run, Limits(max_trie_nodes=needed - 1))


def test_prediction_limit_counts_new_call_indices_only() -> None:
    state = AgentState()
    first = run(llm("a", 0, 1), llm("a", 2, 3), llm("b", 4, 5))  # root 2 + a 2 + b 1
    check_trie(state, first, Limits(max_trie_predictions=5))
    with pytest.raises(RecordError, match=r"5 trie predictions.*max_trie_predictions is 4") as info:
        check_trie(state, first, Limits(max_trie_predictions=4))
    assert info.value.reason == "limits"
    state.learn(first, LearnerConfig())
    # an agent already over a (lowered) limit still learns runs that add nothing to its trie
    check_trie(state, run(llm("b", 0, 1)), Limits(max_trie_predictions=1))
    with pytest.raises(RecordError, match="6 trie predictions"):
        check_trie(state, run(llm("b", 0, 1), llm("b", 2, 3)), Limits(max_trie_predictions=5))


@pytest.mark.parametrize(("nodes", "predictions"), [(3, 1000), (128, 12), (5, 20), (9, 40)])
def test_the_quick_check_decides_as_the_exact_count(nodes: int, predictions: int) -> None:
    """check_trie skips counting when a run cannot reach the limits; whatever it decides
    equals the rule on the exact counts (`size_after`)."""
    limits = Limits(max_trie_nodes=nodes, max_trie_predictions=predictions)
    state, config = AgentState(), LearnerConfig()
    for record in generate_runs(300, 1, seed=nodes, start_ns=START):
        parsed = parse_run(orjson.dumps(record))
        after_nodes, after_predictions = state.size_after(parsed)
        too_big = (after_nodes > nodes and after_nodes > state.node_count) or (
            after_predictions > predictions and after_predictions > state.prediction_count
        )
        try:
            check_trie(state, parsed, limits)
        except RecordError:
            assert too_big
            continue
        assert not too_big
        state.learn(parsed, config)


def adversarial_state(limits: Limits) -> AgentState:
    """A state at `limits` with the longest names and numbers a record can give."""
    state, config = AgentState(), LearnerConfig()
    name_length = limits.max_name_length
    names = [chr(0x10000 + i) * name_length for i in range(limits.max_trie_nodes - 1)]
    names[0] = '"\\' * (name_length // 2)  # escaped: 2 bytes each in JSON
    # one node gets the deep indices, every other node one index
    deep = limits.max_trie_predictions - (len(names) - 1)
    huge = 2**32 - 1
    calls = [llm(names[0], 0.001 * i, 0.001 * i + 0.0007, huge - i) for i in range(deep // 2)]
    calls += [llm(name, 1, 1000.333, 3) for name in names[1:]]
    record = run(*calls, agent="\U0010ffff" * name_length)
    check_trie(state, record, limits)
    state.learn(record, config)
    for tokens in (1, 7, 2**31 + 11):  # means and percentiles with long fractions
        state.learn(run(llm(names[1], 0, 1.1, tokens), agent=record.agent_id), config)
    assert state.node_count == limits.max_trie_nodes
    assert limits.max_trie_predictions - state.prediction_count in (0, 1)
    return state


@pytest.mark.parametrize(
    "limits",
    [Limits(), Limits(max_trie_nodes=3, max_trie_predictions=40, max_name_length=5)],
    ids=["defaults", "small"],
)
def test_the_bound_holds_for_the_largest_trie_the_limits_allow(limits: Limits) -> None:
    state = adversarial_state(limits)
    agent = "\U0010ffff" * limits.max_name_length
    published = len(orjson.dumps(trie_dict(agent, state, LearnerConfig())))
    bound = trie_bytes_bound(limits)
    assert published <= bound
    assert published > bound / 2, (published, bound)  # and it is not wildly loose


def test_the_default_limits_fit_the_default_topic_and_a_smaller_topic_is_refused() -> None:
    check_publishable(Limits(), "agent-tries", 1_048_588)  # Kafka's default max.message.bytes
    with pytest.raises(SettingsError, match=r"topic agent-tries accepts 500,000") as info:
        check_publishable(Limits(), "agent-tries", 500_000)
    assert "max_trie_nodes=128" in str(info.value)
    with pytest.raises(SettingsError, match="max_trie_nodes=10000"):
        check_publishable(Limits(max_trie_nodes=10_000), "agent-tries", 1_048_588)
