"""The router client library against hints and tries a real worker published (SPEC 8)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from devtools.kafka_broker import TopicSpec
from devtools.worker_process import produce
from tests.integration.published_hints import Published, published
from worker.client import HintsClient, HintsView, Resolution
from worker.learner import LearnerConfig, lookup_hints
from worker.settings import KafkaSettings

pytestmark = pytest.mark.integration

CONFIG = LearnerConfig()
FALLBACK = {
    "osl": 32,
    "iat": 0,
    "priority": 4,
    "latency_sensitivity": 1.0,
    "prefix_id": "fallback",
    "total_requests": 1,
}


@pytest.fixture(scope="module")
def outputs(kafka_broker: Any) -> Published:
    return published(kafka_broker)


def client_for(out: Published, **kwargs: Any) -> HintsClient:
    return HintsClient(
        out.bootstrap, hints_topic=out.topics.hints, tries_topic=out.topics.tries, **kwargs
    )


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def ask(client: HintsClient, agent: str, run: str | None, name: str | None) -> Resolution:
    """One call, answered before the next is sent (so none joins another's fan-out group)."""
    resolution = client.hints_for(agent, run, name)
    client.call_finished(agent, run, name)
    return resolution


def want_trie(out: Published, agent: str, name: str, index: int) -> dict[str, Any]:
    hints = lookup_hints(out.expected[agent]["trie"], [name], index, CONFIG)
    assert hints is not None
    return hints


async def test_the_view_loads_every_agent_then_resolves_from_the_trie(outputs: Published) -> None:
    async with client_for(outputs) as client:
        assert await client.wait_ready(30)
        store = client.view.store
        with_hints = {a for a, e in outputs.expected.items() if e["hints"] is not None}
        assert set(store.hints) == with_hints  # tools-only has a trie, no hints record
        assert set(store.tries) == set(outputs.expected)
        run = str(uuid.uuid4())
        got = [ask(client, "planner", run, name) for name in ("plan", "write", "write")]
        assert [r.source for r in got] == ["trie"] * 3
        assert [r.call_index for r in got] == [1, 1, 2]
        assert got[0].hints == want_trie(outputs, "planner", "plan", 1)
        assert got[1].hints == want_trie(outputs, "planner", "write", 1)
        assert got[2].hints == want_trie(outputs, "planner", "write", 2)
        assert got[2].hints["prefix_id"] == "planner-d1"
        assert got[2].hints["osl"] == 1080  # p90 of the 2nd write: 900, 1000, 1100 tokens
        assert got[2].hints["total_requests"] == 0 + 2  # no call after it, 2nd of its name
        # a new run counts from 1 again
        assert ask(client, "planner", str(uuid.uuid4()), "write").call_index == 1


async def test_agent_default_fallback_and_none(outputs: Published) -> None:
    async with client_for(outputs, fallback=FALLBACK) as client:
        assert await client.wait_ready(30)
        default = ask(client, "planner", None, "write")  # no run: agent-wide only
        assert default.source == "agent_default"
        assert default.hints == outputs.expected["planner"]["hints"]
        assert ask(client, "stranger", "r1", "write").source == "fallback"
        tools = ask(client, "tools-only", "r1", "search")
        assert tools.source == "fallback" and tools.hints == FALLBACK
    async with client_for(outputs) as client:
        assert await client.wait_ready(30)
        none = ask(client, "stranger", "r1", "write")
        assert none.source == "none" and none.hints is None


async def test_min_runs_skips_agents_learned_from_too_few_runs(outputs: Published) -> None:
    assert outputs.expected["solo"]["runs"] == 1
    assert outputs.expected["planner"]["runs"] == 3
    async with client_for(outputs, min_runs=2, fallback=FALLBACK) as client:
        assert await client.wait_ready(30)
        solo = ask(client, "solo", "r1", "answer")
        assert solo.source == "fallback" and solo.skipped == "min_runs"
        assert ask(client, "planner", "r1", "plan").source == "trie"


async def test_max_age_skips_old_hints_and_the_view_follows(outputs: Published) -> None:
    agent = f"old-{uuid.uuid4().hex[:6]}"
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    record = {**outputs.expected["planner"], "agent_id": agent, "updated_at": hour_ago}
    record.pop("trie")
    async with client_for(outputs, max_age_s=600, fallback=FALLBACK) as client:
        assert await client.wait_ready(30)
        await produce(
            outputs.bootstrap, outputs.topics.hints, [(agent.encode(), orjson.dumps(record))]
        )
        await eventually(lambda: agent in client.view.store.hints, "the view to follow")
        old = ask(client, agent, "r1", "plan")
        assert old.source == "fallback" and old.skipped == "max_age"
        assert ask(client, "planner", "r1", "plan").source == "trie"  # fresh
    async with client_for(outputs) as client:  # max_age_s = 0: no limit
        assert await client.wait_ready(30)
        assert ask(client, agent, "r1", "plan").source == "agent_default"


async def test_tombstones_delete_the_trie_then_the_agent(outputs: Published) -> None:
    async with client_for(outputs) as client:
        assert await client.wait_ready(30)
        store = client.view.store
        assert ask(client, "doomed-trie", "r1", "x").source == "trie"
        await produce(outputs.bootstrap, outputs.topics.tries, [(b"doomed-trie", None)])
        await eventually(lambda: "doomed-trie" not in store.tries, "the trie tombstone")
        assert ask(client, "doomed-trie", "r1", "x").source == "agent_default"

        assert ask(client, "doomed-agent", "r1", "x").source == "trie"
        await produce(outputs.bootstrap, outputs.topics.hints, [(b"doomed-agent", None)])
        await eventually(lambda: "doomed-agent" not in store.hints, "the hints tombstone")
        assert ask(client, "doomed-agent", "r1", "x").source == "none"
    async with client_for(outputs) as client:  # a fresh view reads the tombstones too
        assert await client.wait_ready(30)
        assert "doomed-agent" not in client.view.store.hints
        assert "doomed-trie" not in client.view.store.tries


async def test_bad_records_on_the_topics_are_skipped(outputs: Published) -> None:
    agent = f"junk-{uuid.uuid4().hex[:6]}"
    async with client_for(outputs) as client:
        assert await client.wait_ready(30)
        await produce(
            outputs.bootstrap,
            outputs.topics.hints,
            [(agent.encode(), b"{not json"), (b"also-" + agent.encode(), b"[1]")],
        )  # a compacted topic refuses records without a key: those are unit-tested
        await eventually(lambda: client.view.store.invalid["hints"] >= 2, "2 bad records")
        assert ask(client, agent, "r1", "x").source == "none"
        assert ask(client, "planner", "r1", "plan").source == "trie"


async def test_calls_are_counted_while_the_view_loads(outputs: Published) -> None:
    client = client_for(outputs)
    run = str(uuid.uuid4())
    before = ask(client, "planner", run, "write")  # not started: no view yet
    assert before.source == "none" and before.call_index == 1
    async with client:
        assert await client.wait_ready(30)
        after = ask(client, "planner", run, "write")
        assert after.source == "trie" and after.call_index == 2
        assert after.hints == want_trie(outputs, "planner", "write", 2)


async def test_view_over_scram(kafka_broker: Any, outputs: Published) -> None:
    config = kafka_broker.sasl_client_config()
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=kafka_broker.scram_mechanism,
        sasl_username=kafka_broker.scram_user,
        sasl_password=kafka_broker.scram_password,
    )
    assert config["security_protocol"] == "SASL_PLAINTEXT"
    view = HintsView(
        kafka_broker.sasl_bootstrap,
        hints_topic=outputs.topics.hints,
        tries_topic=outputs.topics.tries,
        kafka=kafka,
    )
    async with view:
        assert await view.wait_ready(30)
        assert "planner" in view.store.hints and "planner" in view.store.tries


async def test_a_topic_created_later_is_followed(kafka_broker: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    hints_topic, tries_topic = f"late-hints-{suffix}", f"late-tries-{suffix}"
    view = HintsView(
        kafka_broker.bootstrap,
        hints_topic=hints_topic,
        tries_topic=tries_topic,
        metadata_refresh_s=0.5,
    )
    async with view:
        assert await view.wait_ready(30)  # nothing to load: ready at once
        record = {
            "agent_id": "late",
            "hints": FALLBACK,
            "runs": 1,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        await kafka_broker.create_topics(TopicSpec(hints_topic, 2, {"cleanup.policy": "compact"}))
        await produce(kafka_broker.bootstrap, hints_topic, [(b"late", orjson.dumps(record))])
        await eventually(lambda: "late" in view.store.hints, "the late topic's record")
