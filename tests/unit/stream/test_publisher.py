"""The publisher: an agent whose record cannot be sent is retried alone, with backoff;
everybody else keeps being published (no broker)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson
import pytest
from aiokafka.errors import MessageSizeTooLargeError, OutOfOrderSequenceNumber

from worker.demo_workload import generate_runs
from worker.learner import LearnerConfig
from worker.models import parse_run
from worker.observability.metrics import WorkerMetrics
from worker.settings import TopicSettings
from worker.stream import publisher as publisher_module
from worker.stream.pacing import Pacer
from worker.stream.publish_queue import PublishQueue
from worker.stream.publish_retries import Retries
from worker.stream.publisher import Publisher
from worker.stream.state.store import StateStore


class Table(dict):
    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key, default)


class Worker:
    """A store, its publish queue and a publisher over `producer` (no broker)."""

    def __init__(self, producer: Producer, topics: TopicSettings | None = None) -> None:
        self.store = StateStore(Table(), max_bytes=1 << 30)
        self.to_publish = PublishQueue(self.store.cache)
        self.metrics = WorkerMetrics()
        self.publisher = Publisher(
            producer,  # type: ignore[arg-type]
            self.store,
            self.to_publish,
            LearnerConfig(),
            topics or TopicSettings(),
            self.metrics,
            positions=lambda: dict(self.positions),
        )
        self.positions: dict[tuple[str, int], int] = {}

    def learn(self, run: Any) -> None:
        entry = self.store.get(run.agent_id, 0)
        learned = self.store.state(entry).learn(run, LearnerConfig())
        self.store.learned(entry, run.id.int, learned.observations, learned.recent_pairs())
        self.to_publish.changed(entry, 0.0, run.started_at)


class Batch:
    """aiokafka's BatchBuilder, as far as the publisher uses it. A record too large for its
    topic never shares a batch (it does not fit beside others), as with the real one."""

    def __init__(self, large: set[str]) -> None:
        self.large = large
        self.keys: list[str] = []

    def append(self, *, timestamp: Any, key: bytes, value: bytes, headers: Any) -> Any:
        agent = key.decode()
        if self.keys and (agent in self.large or self.keys[0] in self.large):
            return None
        self.keys.append(agent)
        return object()

    def close(self) -> None:
        pass


class Producer:
    """Accepts every record but those of `refused` agents (too large, as the broker says),
    on every topic or only on `refused_topic`."""

    def __init__(
        self,
        refused: set[str],
        refused_topic: str | None = None,
        error: type[Exception] = MessageSizeTooLargeError,
    ) -> None:
        self.refused = refused
        self.refused_topic = refused_topic
        self.error = error
        self.sent: list[tuple[str, str]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> Batch:
        return Batch(self.refused)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
        done = asyncio.get_running_loop().create_future()
        if self.refused_topic in (None, topic) and any(k in self.refused for k in batch.keys):
            done.set_exception(self.error())
        else:
            self.sent += [(topic, key) for key in batch.keys]
            done.set_result(None)
        return done


def learn(worker: Worker, agents: int) -> None:
    for raw in generate_runs(agents * 3, agents, seed=2, llm_calls=(2, 3)):
        worker.learn(parse_run(orjson.dumps(raw)))


async def test_a_failing_agent_is_retried_alone_with_backoff(monkeypatch: Any) -> None:
    clock = [1000.0]
    monkeypatch.setattr(publisher_module.time, "monotonic", lambda: clock[0])
    producer = Producer(refused={"agent-0002"})
    worker = Worker(producer)
    learn(worker, 4)
    publisher, metrics = worker.publisher, worker.metrics

    await publisher.publish_pending()
    published = {agent for _, agent in producer.sent}
    assert published == {"agent-0000", "agent-0001", "agent-0003"}
    assert len(publisher.retries) == 1
    assert "agent-0002" in (publisher.retries.describe() or "")
    assert metrics.publish_failing._value.get() == 1  # type: ignore[attr-defined]

    producer.sent.clear()
    clock[0] += 0.5  # before the first retry: nothing is sent again, least of all everyone
    await publisher.publish_pending()
    assert producer.sent == []

    clock[0] += 1.0  # the retry is due: only the failing agent is tried
    producer.refused.clear()
    await publisher.publish_pending()
    assert {agent for _, agent in producer.sent} == {"agent-0002"}
    assert len(publisher.retries) == 0 and publisher.retries.describe() is None


async def test_a_record_the_broker_refuses_leaves_the_producer_usable() -> None:
    worker = Worker(Producer(refused={"agent-0002"}))
    learn(worker, 4)
    await worker.publisher.publish_pending()
    assert len(worker.publisher.retries) == 1 and worker.publisher.producer_lost is None


async def test_an_out_of_order_sequence_marks_the_producer_lost() -> None:
    """aiokafka fails every later batch of that partition (aio-libs/aiokafka#1017): only a
    restart sends again, so the publisher says so for /healthz and the checkpoint."""
    worker = Worker(Producer(refused={"agent-0002"}, error=OutOfOrderSequenceNumber))
    learn(worker, 4)
    await worker.publisher.publish_pending()
    assert isinstance(worker.publisher.producer_lost, OutOfOrderSequenceNumber)


async def test_the_backoff_doubles_up_to_a_minute(monkeypatch: Any) -> None:
    retries = Retries()
    delays = []
    now = 0.0
    for attempt in range(9):
        first = retries.failed("tries", "a", object(), RuntimeError("x"), now)  # type: ignore[arg-type]
        assert first == (attempt == 0)
        delays.append(retries._failing[("tries", "a")].next_at - now)
        now = retries._failing[("tries", "a")].next_at  # the retry, when it is due
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


async def test_a_trie_that_keeps_failing_backs_off_although_its_hints_go_out(
    monkeypatch: Any,
) -> None:
    """Hints and tries are published on their own: the agent's hints succeeding must not
    reset the backoff of its failing trie (a retry every second, for ever)."""
    clock = [1000.0]
    monkeypatch.setattr(publisher_module.time, "monotonic", lambda: clock[0])
    topics = TopicSettings()
    producer = Producer(refused={"agent-0001"}, refused_topic=topics.tries)
    worker = Worker(producer, topics)
    learn(worker, 2)
    publisher = worker.publisher
    await publisher.publish_pending()
    assert (topics.hints, "agent-0001") in producer.sent
    delays = []
    for _ in range(4):
        failing = publisher.retries._failing[("tries", "agent-0001")]
        delays.append(failing.next_at - clock[0])
        clock[0] = failing.next_at
        await publisher.publish_pending()
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert len(publisher.retries) == 1


async def test_an_agents_last_trie_is_never_older_than_its_last_hints() -> None:
    """A trie built between a run and the hints of that run holds the run already; when the
    hints follow, the next tries cycle sends the (unchanged) trie again, so that a reader
    of both topics sees a trie at least as new as the hints."""
    producer = Producer(refused=set())
    worker = Worker(producer)
    publisher = worker.publisher
    first, second = (
        parse_run(orjson.dumps(raw)) for raw in generate_runs(2, 1, seed=5, llm_calls=(2, 3))
    )
    worker.learn(first)
    await publisher.publish_hints()  # hints of the first run; its trie is due
    worker.learn(second)
    await publisher.publish_tries()  # the trie already holds the second run
    await publisher.publish_hints()  # the hints of the second run: newer than that trie
    await publisher.publish_tries()  # the same trie, sent again
    topics = [topic for topic, _ in producer.sent]
    assert topics[-2:] == [TopicSettings().hints, TopicSettings().tries], topics
    await publisher.publish_hints()
    await publisher.publish_tries()  # nothing new: nothing sent
    assert len(producer.sent) == len(topics)


async def test_a_rebalance_hurries_the_paced_tries_cycle_under_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commit builds tries at a small share of the loop; a rebalance (or shutdown) that
    waits for them must not wait for the resting: the cycle under way finishes at full
    speed, then its own publish runs."""
    # rest after every build, however fast this machine builds them
    monkeypatch.setattr(publisher_module, "Pacer", functools.partial(Pacer, slice_s=0.0))
    producer = Producer(refused=set())
    worker = Worker(producer)
    learn(worker, 40)
    publisher = worker.publisher
    await publisher.publish_hints()  # their tries are now due
    paced = asyncio.create_task(publisher.publish_tries(share=1e-6))  # would rest for minutes
    await asyncio.sleep(0.05)
    assert not paced.done()
    await asyncio.wait_for(publisher.publish_pending(), timeout=10)
    assert paced.done() and paced.result() == len(worker.store) > 30
    tried = {agent for topic, agent in producer.sent if topic == "agent-tries"}
    assert len(tried) == len(worker.store)


async def test_a_tries_cycle_covers_the_positions_it_started_from() -> None:
    """`covered` is where every source partition stood when the last completed tries cycle
    took its agents, agents still waiting for their hints included: the checkpoint commits
    offsets only up to there."""
    producer = Producer(refused=set())
    worker = Worker(producer)
    first, second = (
        parse_run(orjson.dumps(raw)) for raw in generate_runs(2, 2, seed=8, llm_calls=(2, 3))
    )
    worker.learn(first)
    worker.positions[("runs", 0)] = 11
    await worker.publisher.publish_hints()
    worker.learn(second)  # not taken by a hints cycle yet
    worker.positions[("runs", 0)] = 12
    assert worker.publisher.covered == {}
    await worker.publisher.publish_tries()
    assert worker.publisher.covered == {("runs", 0): 12}
    tried = {agent for topic, agent in producer.sent if topic == TopicSettings().tries}
    assert tried == {first.agent_id, second.agent_id}
    worker.publisher.forget()  # a rebalance: faust seeks the partitions again
    assert worker.publisher.covered == {}


async def test_tries_come_later_when_their_builds_take_more_than_the_budget() -> None:
    """The interval is the base while the builds fit the budget, stretched to fit them
    otherwise, never past the cap (unless the base is longer)."""
    worker = Worker(Producer(refused=set()))
    learn(worker, 4)
    publisher = worker.publisher
    assert publisher.tries_interval(5.0, 0.05) == 5.0  # nothing built yet
    await publisher.publish_pending()
    assert 0 < publisher._last_cycle_built_s < 1.0  # four tries, timed
    assert publisher.tries_interval(5.0, 1.0) == 5.0
    assert publisher.tries_interval(5.0, 1e-9) == publisher_module.TRIES_INTERVAL_MAX_S
    publisher._last_cycle_built_s = 0.5
    assert publisher.tries_interval(5.0, 0.05) == pytest.approx(10.0)
    assert worker.metrics.tries_interval._value.get() == pytest.approx(10.0)  # type: ignore[attr-defined]
    assert publisher.tries_interval(120.0, 0.05) == 120.0
