"""SPEC 8 resolution against the store: every source, staleness, tombstones, bad records."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tests.unit.runs import llm, run, tool
from worker.client import HintsStore, Resolver
from worker.learner import AgentState, LearnerConfig, lookup_hints, state_hints, trie_dict

CONFIG = LearnerConfig()
NOW = 1_900_000_000.0
FALLBACK = {
    "osl": 64,
    "iat": 0,
    "priority": 4,
    "latency_sensitivity": 1.0,
    "prefix_id": "fallback",
    "total_requests": 1,
}


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def published(agent: str, *runs: Any, at: float = NOW) -> tuple[bytes, bytes]:
    """The HintsRecord and TrieEnvelope the worker publishes after learning `runs`."""
    state = AgentState()
    for r in runs:
        state.learn(r, CONFIG)
    trie = trie_dict(agent, state, CONFIG) | {"generated_at": stamp(at)}
    hints = {"agent_id": agent, "hints": state_hints(state, CONFIG), "runs": state.runs}
    accuracy = state.recent.summary()
    if accuracy is not None:  # absent until a call was scored
        hints["accuracy"] = accuracy
    return orjson.dumps(hints | {"updated_at": stamp(at)}), orjson.dumps(trie)


def planner_runs(agent: str = "planner") -> list[Any]:
    return [
        run(llm("plan", 0, 100, 50), llm("write", 200, 300, 500), llm("write", 400, 500, 700)),
        run(llm("plan", 0, 90, 70), llm("write", 150, 300, 400), agent=agent),
    ]


def store_with(agent: str = "planner", *, at: float = NOW, trie: bool = True) -> HintsStore:
    store = HintsStore()
    hints, tries = published(agent, *planner_runs(agent), at=at)
    assert store.apply("hints", agent.encode(), hints)
    if trie:
        assert store.apply("tries", agent.encode(), tries)
    return store


def resolver(store: HintsStore, **kwargs: Any) -> Resolver:
    return Resolver(store, clock=lambda: NOW, **kwargs)


def test_trie_source_is_the_spec5_lookup_at_name_and_call_index() -> None:
    store = store_with()
    got = resolver(store).resolve("planner", "write", 2)
    want = lookup_hints(store.tries["planner"].trie, ["write"], 2, CONFIG)
    assert got.source == "trie" and got.call_index == 2 and got.skipped is None
    assert got.hints == want
    assert got.hints["prefix_id"] == "planner-d1"
    assert got.hints["osl"] == 700  # the 2nd "write" call: only one sample, 700 tokens


def test_unknown_name_falls_back_to_the_roots_prediction_for_the_index() -> None:
    store = store_with()
    got = resolver(store).resolve("planner", "never-called", 1)
    assert got.source == "trie"
    assert got.hints == lookup_hints(store.tries["planner"].trie, ["never-called"], 1, CONFIG)


def test_agent_default_without_a_trie() -> None:
    store = store_with(trie=False)
    got = resolver(store).resolve("planner", "write", 1)
    assert got.source == "agent_default"
    assert got.hints == orjson.loads(published("planner", *planner_runs())[0])["hints"]
    assert got.hints["prefix_id"] == "default"


def test_agent_default_without_a_run_context() -> None:
    got = resolver(store_with()).resolve("planner", None, None)
    assert got.source == "agent_default" and got.call_index is None


def test_fallback_for_an_unknown_agent_then_none_without_one() -> None:
    store = store_with()
    got = resolver(store, fallback=FALLBACK).resolve("stranger", "x", 1)
    assert got.source == "fallback" and got.hints == FALLBACK
    assert resolver(store).resolve("stranger", "x", 1).source == "none"
    assert resolver(store).resolve("stranger", "x", 1).hints is None


def test_agent_without_llm_calls_has_no_hints() -> None:
    store = HintsStore()
    hints, tries = published("tools-only", run(tool("search", 0, 10), agent="tools-only"))
    store.apply("hints", b"tools-only", hints)
    store.apply("tries", b"tools-only", tries)
    assert store.hints["tools-only"].hints is None
    assert resolver(store, fallback=FALLBACK).resolve("tools-only", "x", 1).source == "fallback"


def test_min_runs_skips_the_agent_entry_and_its_trie() -> None:
    store = store_with()
    got = resolver(store, min_runs=3, fallback=FALLBACK).resolve("planner", "write", 1)
    assert got.source == "fallback" and got.skipped == "min_runs"
    assert resolver(store, min_runs=2).resolve("planner", "write", 1).source == "trie"


def test_the_accuracy_floor_skips_the_agent_entry_and_its_trie() -> None:
    # the first run is scored against nothing; the second's two calls against the first:
    # plan: 70 tokens > osl 50 (one sample, 50), |50 - 70| = 20; write #1: 400 <= osl 500,
    # |500 - 400| = 100; so 2 scored calls, coverage 1/2, MAE (20 + 100) / 2 = 60
    store = store_with()
    accuracy = store.hints["planner"].accuracy
    assert accuracy is not None
    assert (accuracy.scored, accuracy.osl_coverage, accuracy.osl_mae) == (2, 0.5, 60.0)
    low = resolver(store, min_osl_coverage=0.6, min_scored=2, fallback=FALLBACK)
    got = low.resolve("planner", "write", 1)
    assert got.source == "fallback" and got.skipped == "accuracy"
    assert low.resolve("planner", None, None).source == "fallback"  # the default too
    on_the_floor = resolver(store, min_osl_coverage=0.5, min_scored=2)
    assert on_the_floor.resolve("planner", "write", 1).source == "trie"
    too_few = resolver(store, min_osl_coverage=0.6, min_scored=3)
    assert too_few.resolve("planner", "write", 1).source == "trie"
    assert resolver(store).resolve("planner", "write", 1).source == "trie"  # no floor


def test_entries_without_accuracy_are_never_skipped_for_it() -> None:
    store = HintsStore()
    hints, tries = published("solo", run(llm("a", 0, 10, 5), agent="solo"))
    assert b"accuracy" not in hints  # one run: nothing scored yet
    store.apply("hints", b"solo", hints)
    store.apply("tries", b"solo", tries)
    strict = resolver(store, min_osl_coverage=1.0, min_scored=0)
    assert strict.resolve("solo", "a", 1).source == "trie"


def test_a_bad_accuracy_floor_is_refused() -> None:
    with pytest.raises(ValueError, match="min_osl_coverage"):
        Resolver(HintsStore(), min_osl_coverage=1.5)
    with pytest.raises(ValueError, match="min_scored"):
        Resolver(HintsStore(), min_scored=-1)


def test_max_age_skips_an_old_entry() -> None:
    store = store_with(at=NOW - 120)
    old = resolver(store, max_age_s=60).resolve("planner", "write", 1)
    assert old.source == "none" and old.skipped == "max_age"
    assert resolver(store, max_age_s=180).resolve("planner", "write", 1).source == "trie"
    assert resolver(store).resolve("planner", "write", 1).source == "trie"  # 0 = no limit


def test_an_old_trie_alone_falls_back_to_the_agent_default() -> None:
    store = store_with()
    _, old_trie = published("planner", *planner_runs(), at=NOW - 120)
    store.apply("tries", b"planner", old_trie)
    got = resolver(store, max_age_s=60).resolve("planner", "write", 1)
    assert got.source == "agent_default" and got.skipped == "max_age"


def test_a_trie_is_not_used_without_the_agents_hints_record() -> None:
    store = store_with()
    store.apply("hints", b"planner", None)  # tombstone: the agent is deleted
    assert "planner" in store.tries
    assert resolver(store).resolve("planner", "write", 1).source == "none"


def test_tombstones_delete_entries() -> None:
    store = store_with()
    assert store.apply("tries", b"planner", None)
    assert "planner" not in store.tries
    assert resolver(store).resolve("planner", "write", 1).source == "agent_default"
    assert store.apply("hints", b"planner", None)
    assert resolver(store).resolve("planner", "write", 1).source == "none"
    assert store.apply("hints", b"never-seen", None)  # deleting nothing is fine


def test_a_trie_that_cannot_be_walked_is_skipped() -> None:
    store = store_with()
    broken = orjson.loads(published("planner", *planner_runs())[1])
    broken["root"]["children"]["write"]["predictions_any_index"] = {"osl": "many"}
    broken["root"]["children"]["write"]["predictions_by_call_index"] = {}
    store.apply("tries", b"planner", orjson.dumps(broken))
    got = resolver(store).resolve("planner", "write", 1)
    assert got.source == "agent_default" and got.skipped == "invalid_trie"


def _with_accuracy(accuracy: Any) -> bytes:
    record = {"hints": None, "runs": 1, "updated_at": "2026-01-01T00:00:00Z"}
    return orjson.dumps(record | {"accuracy": accuracy})


@pytest.mark.parametrize(
    ("topic", "value", "why"),
    [
        ("hints", b"{not json", "unexpected"),
        ("hints", b"[1, 2]", "expected a JSON object"),
        ("hints", b'{"hints": null, "runs": -1, "updated_at": "2026-01-01T00:00:00Z"}', "runs"),
        ("hints", b'{"hints": null, "runs": 1}', "missing updated_at"),
        ("hints", b'{"hints": null, "runs": 1, "updated_at": "yesterday"}', "updated_at"),
        ("hints", b'{"hints": {"osl": 1}, "runs": 1, "updated_at": "2026-01-01T00:00:00Z"}', "iat"),
        ("hints", _with_accuracy([]), "accuracy: expected an object"),
        ("hints", _with_accuracy({"scored": -1}), "accuracy.scored"),
        ("hints", _with_accuracy({"scored": 5, "osl_coverage": 1.5}), "osl_coverage"),
        ("hints", _with_accuracy({"scored": 5, "osl_coverage": 1, "osl_mae": "x"}), "osl_mae"),
        ("tries", b'{"workflow_name": "a", "root": []}', "root"),
        ("tries", b'{"workflow_name": "a\\nb", "root": {}}', "control"),
    ],
)
def test_bad_records_are_counted_and_remove_the_entry(topic: str, value: bytes, why: str) -> None:
    store = store_with()
    assert store.apply(topic, b"planner", value) is False  # type: ignore[arg-type]
    assert store.invalid[topic] == 1  # type: ignore[index]
    assert why in (store.last_error or "")
    table = store.hints if topic == "hints" else store.tries
    assert "planner" not in table


def test_records_without_a_usable_key_are_counted() -> None:
    store = HintsStore()
    assert store.apply("hints", None, b"{}") is False
    assert store.apply("tries", b"\xff\xfe", b"{}") is False
    assert store.invalid == {"hints": 1, "tries": 1}


def test_a_bad_fallback_is_refused() -> None:
    with pytest.raises(ValueError, match="osl"):
        Resolver(HintsStore(), fallback={**FALLBACK, "osl": -1})


ADAPTIVE = LearnerConfig(semantics="adaptive")


def adaptive_store() -> HintsStore:
    """Two agents the adaptive rule set learned: their tries name each node's model."""
    store = HintsStore(prior_max_stale_s=0.0)
    for agent, tokens in (("a", 100), ("b", 300)):
        state = AgentState()
        state.learn(run(llm("plan", 0, 100, tokens, "m"), llm("write", 200, 300, 5, "w")), ADAPTIVE)
        trie = trie_dict(agent, state, ADAPTIVE) | {"generated_at": stamp(NOW)}
        hints = {"agent_id": agent, "hints": state_hints(state, ADAPTIVE), "runs": 1}
        assert store.apply(
            "hints", agent.encode(), orjson.dumps(hints | {"updated_at": stamp(NOW)})
        )
        assert store.apply("tries", agent.encode(), orjson.dumps(trie))
    return store


def test_an_agent_without_history_gets_the_prior_of_its_call_name_and_model() -> None:
    """Between agent_default and fallback: `new` has no entry, the fleet knows `plan` on
    model m (a's 100 tokens and b's 300, one sample each): hints from their pooled
    prediction, as a lookup at depth 1 would make them."""
    store = adaptive_store()
    got = resolver(store, fallback=FALLBACK).resolve("new", "plan", 2, "m")
    assert got.source == "prior" and got.call_index == 2 and got.skipped is None
    prior = store.priors.prediction("plan", "m")
    assert prior is not None and prior["output_tokens"]["sample_count"] == 2
    assert got.hints is not None and got.hints["osl"] == round(prior["output_tokens"]["p90"])
    assert got.hints["prefix_id"] == "new-d1"
    assert got.hints["total_requests"] == round(prior["remaining_calls"]["mean"]) + 2
    assert resolver(store).resolve("new", "unknown-name", 1, "m").source == "none"
    assert resolver(store, fallback=FALLBACK).resolve("new", None, None).source == "fallback"
    assert resolver(store).resolve("a", "plan", 1, "m").source == "trie"  # known: its own


def test_an_agent_passed_over_gets_the_prior_too() -> None:
    store = adaptive_store()
    got = resolver(store, min_runs=5).resolve("a", "plan", 1, "m")
    assert (got.source, got.skipped) == ("prior", "min_runs")


def test_tries_of_the_other_rule_sets_make_no_priors() -> None:
    store = store_with()  # corrected: no `model` on the nodes
    assert resolver(store).resolve("new", "plan", 1).source == "none"
    assert len(store.priors) == 0


def test_a_tries_tombstone_or_bad_value_removes_the_agents_part_of_the_priors() -> None:
    store = adaptive_store()
    assert store.apply("tries", b"a", None)
    prior = store.priors.prediction("plan", "m")
    assert prior is not None and prior["output_tokens"]["sample_count"] == 1
    assert not store.apply("tries", b"b", b"{not json")
    assert store.priors.prediction("plan", "m") is None
