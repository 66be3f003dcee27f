"""`python -m worker produce-demo`: stream generated runs for a handful of agents.

Runs come from `worker.workload.generate_runs`, keyed by agent id, at a steady `--rate`.
With `--follow` it also watches `agent-hints` and prints one line whenever an agent's hints
change, until every produced run is reflected (or nothing moves for `--follow-timeout`).
`--create-topics` creates the worker's topics first when they are missing (as the worker
would at its start).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from worker.commands.options import add_settings_arguments, settings_from_args
from worker.demo_workload import agent_id, generate_runs
from worker.errors import ExitCode
from worker.kafka.clients import client_kwargs, explain
from worker.kafka.reading import assign_at_end, latest_values, new_reader, topic_partitions
from worker.kafka.topics import prepare_topics
from worker.settings import Settings

HINT_FIELDS = ("osl", "iat", "priority", "total_requests", "latency_sensitivity")


# --- producing --------------------------------------------------------------------------------


async def produce_runs(
    producer: Any, topic: str, runs: Iterable[dict[str, Any]], rate: float
) -> Counter[str]:
    """Send runs keyed by agent id at `rate` runs/s (0: as fast as possible); count per agent."""
    sent: Counter[str] = Counter()
    start = time.monotonic()
    pending = []
    for index, run in enumerate(runs):
        if rate > 0:
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        agent = run["agent_id"]
        pending.append(await producer.send(topic, orjson.dumps(run), key=agent.encode()))
        sent[agent] += 1
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return sent


# --- following hints ----------------------------------------------------------------------------


def format_change(record: Mapping[str, Any]) -> str:
    """One compact line for a hints change: agent, runs, then the routing fields."""
    hints = record.get("hints") or {}
    fields = " ".join(f"{name}={hints.get(name)}" for name in HINT_FIELDS)
    return f"{record.get('agent_id', '?'):<12} runs={record.get('runs', 0):<5} {fields}"


class HintsFollower:
    """Watches the hints topic from its current end and prints each agent's hints changes.

    With `tries_topic` it also notes when each agent's trie was last published: the worker
    sends tries on their own, slower cadence, so the final hints can arrive before the final
    trie (within the commit interval, 1 s by default) and `wait_for` waits for both."""

    def __init__(
        self,
        kafka: dict[str, Any],
        topic: str,
        agents: set[str] | None,
        tries_topic: str | None = None,
    ) -> None:
        self.kafka, self.topic, self.agents = kafka, topic, agents
        self.tries_topic = tries_topic
        self.latest: dict[str, dict[str, Any]] = {}
        self._hints_at: dict[str, int] = {}  # broker timestamp (ms) of the latest hints
        self._trie_at: dict[str, int] = {}  # ... and of the latest trie
        self.changed = asyncio.Event()
        self._consumer: Any = None

    async def start(self, baseline: Mapping[str, dict[str, Any]]) -> None:
        """Assign every partition at its end offset; `baseline` is each agent's last record."""
        self.latest = dict(baseline)
        topics = [t for t in (self.topic, self.tries_topic) if t]
        partitions = await topic_partitions(self.kafka, *topics)
        self._consumer = new_reader(self.kafka)
        await self._consumer.start()
        await assign_at_end(self._consumer, partitions)

    async def run(self) -> None:
        """Print a line whenever an agent's hints differ from the last ones seen."""
        async for message in self._consumer:
            if message.topic == self.tries_topic:
                self._trie_at[(message.key or b"").decode(errors="replace")] = message.timestamp
                self.changed.set()
                continue
            record = orjson.loads(message.value) if message.value else None
            if not record:
                continue
            agent = record.get("agent_id")
            if self.agents is not None and agent not in self.agents:
                continue
            previous = self.latest.get(agent)
            self.latest[agent] = record
            self._hints_at[agent] = message.timestamp
            if previous is None or previous.get("hints") != record.get("hints"):
                print(format_change(record), flush=True)
            self.changed.set()

    async def wait_for(self, targets: Mapping[str, int], idle_timeout: float) -> bool:
        """Until each agent's `runs` reaches its target (and a trie at least as new as those
        hints was published, when following tries); False after `idle_timeout` s of quiet."""
        while any(self.runs(a) < n or not self._trie_current(a) for a, n in targets.items()):
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), idle_timeout)
            except TimeoutError:
                return False
        return True

    def _trie_current(self, agent: str) -> bool:
        if self.tries_topic is None or agent not in self._hints_at:
            return True  # not following tries, or no new hints for this agent
        return self._trie_at.get(agent, -1) >= self._hints_at[agent]

    def runs(self, agent: str) -> int:
        return int((self.latest.get(agent) or {}).get("runs", 0))

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


def format_summary(records: Mapping[str, Mapping[str, Any]]) -> str:
    """Final hints per agent, one line each, in agent order."""
    lines = ["final hints per agent:"]
    lines.extend("  " + format_change(records[agent]) for agent in sorted(records))
    return "\n".join(lines)


# --- command ------------------------------------------------------------------------------------

#: flag dest -> dotted setting name
FLAGS = {
    "topic": "topics.runs",
    "hints_topic": "topics.hints",
    "tries_topic": "topics.tries",
    "partitions": "topics.partitions",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser)
    parser.add_argument("--topic", help="input topic (default: the topics.runs setting)")
    parser.add_argument("--hints-topic", help="default: the topics.hints setting")
    parser.add_argument("--tries-topic", help="default: the topics.tries setting")
    parser.add_argument("--count", type=int, default=200, help="runs to produce (default 200)")
    parser.add_argument("--agents", type=int, default=5, help="distinct agents (default 5)")
    parser.add_argument("--rate", type=float, default=20.0, help="runs/s, 0 = unthrottled")
    parser.add_argument("--seed", type=int, default=None, help="workload seed (default: random)")
    parser.add_argument("--follow", action="store_true", help="print hints as they change")
    parser.add_argument(
        "--follow-timeout",
        type=float,
        default=30.0,
        help="with --follow, give up after this many seconds without a hints change",
    )
    parser.add_argument("--create-topics", action="store_true", help="create missing topics first")
    parser.add_argument(
        "--partitions",
        type=int,
        help="for --create-topics (default: the topics.partitions setting)",
    )


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    topics = settings.topics
    kafka = client_kwargs(settings.bootstrap_servers, settings.kafka)
    if args.create_topics:
        layout = await prepare_topics(settings)
        print(f"topics created: {', '.join(layout.created) or 'none (all exist)'}", flush=True)
    if args.count <= 0:
        return ExitCode.OK
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    agents = {agent_id(i) for i in range(args.agents)}
    follower = None
    if args.follow:
        baseline_raw = await latest_values(kafka, topics.hints, agents)
        baseline = {key: orjson.loads(value) for key, value in baseline_raw.items()}
        follower = HintsFollower(kafka, topics.hints, agents, tries_topic=topics.tries)
        await follower.start(baseline)
    producer = AIOKafkaProducer(**kafka, linger_ms=5, acks="all")
    await producer.start()
    before = {agent: follower.runs(agent) for agent in agents} if follower else {}
    follow_task = asyncio.create_task(follower.run()) if follower else None
    try:
        print(
            f"producing {args.count} runs for {args.agents} agents at "
            f"{args.rate or 'max'} runs/s to {topics.runs} (seed {seed})",
            flush=True,
        )
        runs = generate_runs(args.count, args.agents, seed=seed)
        sent = await produce_runs(producer, topics.runs, runs, args.rate)
        print(f"produced {sum(sent.values())} runs", flush=True)
        if follower is None:
            return ExitCode.OK
        targets = {agent: before[agent] + n for agent, n in sent.items()}
        complete = await follower.wait_for(targets, args.follow_timeout)
        print(format_summary(follower.latest), flush=True)
        if not complete:
            behind = {a: n - follower.runs(a) for a, n in targets.items() if follower.runs(a) < n}
            print(f"gave up waiting: runs not yet reflected {behind}", file=sys.stderr)
            return ExitCode.FAILED
        return ExitCode.OK
    finally:
        if follow_task is not None:
            follow_task.cancel()
            await asyncio.gather(follow_task, return_exceptions=True)
        await producer.stop()
        if follower is not None:
            await follower.stop()


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, FLAGS)
    try:
        return asyncio.run(_main(args, settings))
    except (KafkaError, OSError) as exc:
        reason = explain(exc, settings.bootstrap_servers, settings.kafka)
        print(f"produce-demo: cannot reach {settings.bootstrap_servers}: {reason}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        return 130
