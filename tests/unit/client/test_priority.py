"""Priority policies and fan-out groups: what Dynamo's `priority` becomes per request."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.unit.client.test_resolution import published
from tests.unit.runs import llm, run
from worker.client import HintsClient, HintsStore, render
from worker.client.call_context import CallCounter
from worker.client.fanout import FanOutGroups
from worker.client.prediction import lookup_prediction
from worker.demo_workload import generate_runs
from worker.learner import Fleet, LearnerConfig, lookup_hints, trie_dict
from worker.learner.hints import hint_values
from worker.models import parse_run
from worker.settings import PRIORITY_POLICIES, PrioritySettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch_runs(agent: str, runs: int = 6) -> list[Any]:
    """8 parallel `tag` calls sent together; the k-th finishes k-th (admitted in send
    order), so the learner gives index 1 the shortest duration and the lowest level."""
    return [
        run(*(llm("tag", 0, 100 + 60 * k, 40) for k in range(8)), agent=agent) for _ in range(runs)
    ]


def chain_runs(agent: str) -> list[Any]:
    return [run(llm("draft", 0, 100, 100), llm("polish", 200, 300, 300), agent=agent)]


def client_with(*agents: tuple[str, list[Any]], **priority: Any) -> tuple[HintsClient, Clock]:
    client = HintsClient("127.0.0.1:9", priority=PrioritySettings(**priority))
    for agent, runs in agents:
        hints, trie = published(agent, *runs)
        client.view.store.apply("hints", agent.encode(), hints)
        client.view.store.apply("tries", agent.encode(), trie)
    client.view._ready.set()  # loaded without Kafka: the store was filled above
    clock = Clock()
    client.calls = CallCounter(clock=clock)
    return client, clock


def test_the_premise_learned_levels_tell_parallel_calls_apart() -> None:
    _, trie = published("batch", *batch_runs("batch"))
    levels = {
        k: lookup_hints(orjson.loads(trie), ("tag",), k, LearnerConfig())["latency_sensitivity"]
        for k in (1, 8)
    }
    assert levels[1] < levels[8], levels


@pytest.mark.parametrize("policy", PRIORITY_POLICIES)
def test_a_fan_out_gets_one_priority_under_every_policy(policy: str) -> None:
    """No self-made stragglers: the 8 interchangeable calls of one step share a priority
    (and hints), whatever their call index; the next step opens a new group."""
    client, clock = client_with(("batch", batch_runs("batch")), policy=policy)
    first = [client.hints_for("batch", "r1", "tag") for _ in range(8)]
    assert [r.call_index for r in first] == list(range(1, 9))
    assert len({(r.priority, orjson.dumps(r.hints)) for r in first}) == 1
    bodies = [{} for _ in first]
    for resolution, body in zip(first, bodies, strict=True):
        client.render(resolution, body, {})
    assert len({orjson.dumps(body) for body in bodies}) == 1
    for _ in range(8):
        client.call_finished("batch", "r1", "tag")
    assert len(client.fanouts) == 0
    clock.now += 2
    later = [client.hints_for("batch", "r1", "tag") for _ in range(2)]  # a new step
    assert [r.call_index for r in later] == [9, 10]
    assert later[0].priority == later[1].priority
    if policy in ("age-remaining", "classes"):  # resolved anew: the run aged 2 s, and
        assert later[0].priority != first[0].priority  # index 9 predicts fewer calls left


def test_without_fan_out_groups_the_indexes_would_differ() -> None:
    """What the groups prevent: resolved one by one, index 1 and 8 get other levels."""
    client, _ = client_with(("batch", batch_runs("batch")), policy="level")
    one = client.hints_for("batch", "r1", "tag")
    client.call_finished("batch", "r1", "tag")
    for _ in range(6):
        client.hints_for("batch", "r1", "tag")
        client.call_finished("batch", "r1", "tag")
    eighth = client.hints_for("batch", "r1", "tag")
    assert eighth.call_index == 8
    assert one.priority != eighth.priority


def test_age_remaining_is_run_age_plus_k_minus_remaining_tokens_over_r() -> None:
    # draft: 100 tokens, 1 call after it; the agent's mean tokens per call (100+300)/2 = 200
    client, clock = client_with(("chat", chain_runs("chat")), head_start_s=30, tokens_per_s=25)
    draft = client.hints_for("chat", "r1", "draft")
    assert draft.priority == int(0 + 30 - (100 + 1 * 200) / 25)  # 18
    client.call_finished("chat", "r1", "draft")
    clock.now += 5
    polish = client.hints_for("chat", "r1", "polish")
    assert polish.priority == int(5 + 30 - 300 / 25)  # 23: older and nearly done
    body: dict[str, Any] = {}
    rendering = client.render(polish, body, {})
    assert body == {"nvext": {"agent_hints": {"osl": 300, "priority": 23}}}
    assert rendering.headers == {"x-dynamo-request-priority": "23"}


def test_age_remaining_never_goes_below_zero_and_skips_unknown_agents() -> None:
    client, _ = client_with(("chat", chain_runs("chat")), head_start_s=0, tokens_per_s=1)
    assert client.hints_for("chat", "r1", "draft").priority == 0
    unknown = client.hints_for("stranger", "r1", "draft")
    assert (unknown.source, unknown.priority) == ("none", None)


def test_service_classes_keep_learned_priorities_inside_their_band() -> None:
    classes = {"chat": 2, "batch": 0}
    client, clock = client_with(
        ("chat", chain_runs("chat")),
        ("batch", batch_runs("batch")),
        policy="classes",
        classes=classes,
        band_s=100,
    )
    chat = client.hints_for("chat", "r1", "draft")
    assert chat.priority is not None and 200 <= chat.priority < 300
    client.hints_for("batch", "old", "tag")
    client.call_finished("batch", "old", "tag")
    clock.now += 500  # an old batch run: its learned part is capped at the band
    batch = client.hints_for("batch", "old", "tag")
    assert batch.priority == 99
    stranger = client.hints_for("stranger", "r1", "x")  # unlisted, nothing learned
    assert stranger.priority == 0


def test_none_writes_no_priority_and_level_writes_the_level() -> None:
    client, _ = client_with(("chat", chain_runs("chat")), policy="none")
    body: dict[str, Any] = {}
    headers = client.render(client.hints_for("chat", "r1", "draft"), body, {}).headers
    assert body == {"nvext": {"agent_hints": {"osl": 100}}} and headers == {}
    client, _ = client_with(("chat", chain_runs("chat")), policy="level")
    resolution = client.hints_for("chat", "r1", "draft")
    assert resolution.priority == round(resolution.hints["latency_sensitivity"])


def test_lookup_prediction_walks_as_lookup_hints_does() -> None:
    fleet = Fleet()
    for record in generate_runs(300, 6, seed=11):
        fleet.learn(parse_run(orjson.dumps(record)))
    config = fleet.config
    checked = 0
    for agent_id, state in fleet.states.items():
        trie = orjson.loads(orjson.dumps(trie_dict(agent_id, state, config)))
        for name in [*trie["root"]["children"], "unknown-name"]:
            for index in (1, 2, 3, 7):
                p = lookup_prediction(trie, (name,), index)
                expected = lookup_hints(trie, (name,), index, config)
                assert p is not None and expected is not None
                got = hint_values(
                    p["output_tokens"]["p90"],
                    p["interarrival_ms"]["mean"],
                    p["remaining_calls"]["mean"],
                    p["latency_sensitivity"],
                    config,
                    f"{agent_id}-d1",
                    float(p["latency_sensitivity"] or 1),
                    index,
                )
                assert got == expected
                checked += 1
    assert checked > 50


def test_module_render_keeps_the_level_by_default() -> None:
    hints = {"osl": 5, "iat": 0, "priority": 2, "latency_sensitivity": 3.0,
             "prefix_id": "p", "total_requests": 1}  # fmt: skip
    body: dict[str, Any] = {}
    assert render("dynamo", hints, body, {}).headers == {"x-dynamo-request-priority": "3"}
    body = {}
    render("dynamo", None, body, {}, priority=7)  # a class priority without hints
    assert body == {"nvext": {"agent_hints": {"priority": 7}}}


class TestFanOutGroups:
    def test_join_open_finish(self) -> None:
        groups: FanOutGroups[str] = FanOutGroups()
        key = ("a", "r", "tag")
        assert groups.join(key) == (False, None)
        groups.open(key, "first")
        assert groups.join(key) == (True, "first")
        groups.finished(key)
        assert groups.join(key) == (True, "first")  # one still in flight, then this one
        groups.finished(key)
        groups.finished(key)
        assert len(groups) == 0 and groups.join(key) == (False, None)
        groups.finished(key)  # unknown: nothing happens

    def test_idle_and_too_many_groups_are_forgotten(self) -> None:
        clock = Clock()
        groups: FanOutGroups[int] = FanOutGroups(idle_s=10, max_groups=2, clock=clock)
        groups.open(("a", "r1", "x"), 1)
        clock.now += 11
        assert groups.join(("a", "r1", "x")) == (False, None)  # never finished: expired
        for i in range(3):
            groups.open(("a", f"r{i}", "x"), i)
        assert len(groups) == 2 and groups.join(("a", "r0", "x")) == (False, None)

    def test_bad_limits(self) -> None:
        with pytest.raises(ValueError):
            FanOutGroups(idle_s=0)


def test_store_is_shared() -> None:
    client, _ = client_with()
    assert isinstance(client.view.store, HintsStore)
    assert client.policy.store is client.view.store


def test_what_the_client_remembers_follows_the_records_it_came_from() -> None:
    """A call name and index resolve once while the agent's records stay the same; a
    republished record or a tombstone takes effect at the next request."""
    client, _ = client_with(("chat", chain_runs("chat")), head_start_s=30, tokens_per_s=25)
    first = client.hints_for("chat", "r1", "draft")
    assert (first.hints["osl"], first.priority) == (100, int(30 - (100 + 1 * 200) / 25))
    assert client.hints_for("chat", "r2", "draft") == first  # remembered, the same
    # the worker learned longer drafts: draft 200 tokens, the agent 250 per call
    hints, trie = published("chat", run(llm("draft", 0, 100, 200), llm("polish", 200, 300, 300)))
    client.view.store.apply("tries", b"chat", trie)
    client.view.store.apply("hints", b"chat", hints)
    again = client.hints_for("chat", "r3", "draft")
    assert (again.hints["osl"], again.priority) == (200, int(30 - (200 + 1 * 250) / 25))
    client.view.store.apply("hints", b"chat", None)  # the agent is deleted
    gone = client.hints_for("chat", "r4", "draft")
    assert (gone.source, gone.hints, gone.priority) == ("none", None, None)


def test_with_max_age_the_client_resolves_anew_as_time_passes() -> None:
    hints, trie = published("chat", *chain_runs("chat"))
    client = HintsClient("127.0.0.1:9", max_age_s=60)
    client.view.store.apply("hints", b"chat", hints)
    client.view.store.apply("tries", b"chat", trie)
    client.view._ready.set()  # loaded without Kafka: the store was filled above
    now = client.view.store.hints["chat"].updated_at_s
    client.resolver.clock = lambda: now + 10
    assert client.hints_for("chat", "r1", "draft").source == "trie"
    client.resolver.clock = lambda: now + 61
    stale = client.hints_for("chat", "r2", "draft")
    assert (stale.source, stale.skipped) == ("none", "max_age")


def test_call_names_never_fill_the_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Call names are the callers' (any string through the gateway): what the client and
    its resolver remember per name is bounded."""
    import worker.client.client
    import worker.client.resolution

    monkeypatch.setattr(worker.client.client, "MAX_REMEMBERED", 4)
    monkeypatch.setattr(worker.client.resolution, "MAX_REMEMBERED", 4)
    client, _ = client_with(("chat", chain_runs("chat")))
    for k in range(20):
        client.hints_for("chat", f"r{k}", f"name-{k}")
    assert 0 < len(client._decided) <= 4 and 0 < len(client.resolver._lookups) <= 4
    assert client.hints_for("chat", "r1", "draft").source == "trie"
