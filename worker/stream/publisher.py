"""Coalescing publisher: the latest hints and tries of each changed agent, on a timer.

Hints (a few root statistics) go out every `publish_interval_ms`; whole tries, which cost
about a millisecond per busy agent to build, at most every `TRIES_INTERVAL_S`, so both still
leave within a second of the run. Values equal to the last published one (ignoring
`generated_at` / `updated_at`) are skipped. HintsRecord goes to the hints topic, the
TrieEnvelope to the tries topic, both keyed by agent id. Publishing is at-least-once: the
topics are compacted "latest state", so re-publishing is harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from worker.learner import LearnerConfig, state_hints, trie_dict
from worker.models import dumps
from worker.models.timestamps import now_rfc3339
from worker.observability.metrics import WorkerMetrics
from worker.settings import TopicSettings
from worker.stream.state_cache import Entry, StateCache

log = logging.getLogger(__name__)

#: tries of changed agents are built and sent at most this often (hints: every cycle)
TRIES_INTERVAL_S = 0.8
#: while building tries, the loop gets a turn after this much work
SLICE_S = 0.005
#: an agent whose publish failed is retried after this, doubling up to RETRY_MAX_S
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass(slots=True)
class Send:
    """One queued record: which output, whose, and its delivery future."""

    output: str
    agent_id: str
    entry: Entry
    delivery: asyncio.Future[Any]


@dataclass(slots=True)
class Failing:
    entry: Entry
    attempts: int
    next_at: float
    error: str


class Retries:
    """Agents whose last publish failed, each retried alone with exponential backoff."""

    def __init__(self) -> None:
        self._failing: dict[str, Failing] = {}

    def __len__(self) -> int:
        return len(self._failing)

    def failed(self, agent_id: str, entry: Entry, error: BaseException, now: float) -> bool:
        """Note a failure; True when the agent was not failing before."""
        failing = self._failing.get(agent_id)
        if failing is not None and now < failing.next_at:  # its other record, same attempt
            failing.error = repr(error)[:200]
            return False
        attempts = failing.attempts + 1 if failing else 1
        delay = min(RETRY_FIRST_S * 2 ** (attempts - 1), RETRY_MAX_S)
        self._failing[agent_id] = Failing(entry, attempts, now + delay, repr(error)[:200])
        return failing is None

    def succeeded(self, agent_id: str) -> None:
        if self._failing.pop(agent_id, None) is not None:
            log.info("publishing agent %s works again", agent_id)

    def due(self, now: float, skip: set[str]) -> list[tuple[str, Entry]]:
        """Failing agents whose retry time has come (not already in `skip`)."""
        return [
            (agent_id, failing.entry)
            for agent_id, failing in self._failing.items()
            if failing.next_at <= now and agent_id not in skip
        ]

    def describe(self) -> str | None:
        """For /healthz: how many agents fail, and one example."""
        if not self._failing:
            return None
        agent_id, failing = next(iter(self._failing.items()))
        return (
            f"publishing failing for {len(self._failing)} agent(s), retried with backoff; "
            f"e.g. {agent_id}: {failing.error}"
        )

    def clear(self) -> None:
        self._failing.clear()


class Publisher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        cache: StateCache,
        config: LearnerConfig,
        topics: TopicSettings,
        metrics: WorkerMetrics,
    ) -> None:
        self.producer = producer
        self.cache = cache
        self.config = config
        self.topics = topics
        self.metrics = metrics
        self._last_hints: dict[str, bytes] = {}
        self._last_trie: dict[str, bytes] = {}
        self._tries_due: dict[str, Entry] = {}  # changed since their trie was last sent
        self._tries_sent_at = 0.0
        self._lock = asyncio.Lock()
        self.retries = Retries()

    def _hints_record(self, agent_id: str, entry: Entry) -> bytes | None:
        """The HintsRecord to send, or None when there are none yet or they are unchanged."""
        hints = state_hints(entry.state, self.config)
        if hints is None:
            return None
        runs = entry.state.runs
        digest = _digest(dumps([hints, runs]))
        if self._last_hints.get(agent_id) == digest:
            self.metrics.publish_skipped.labels("hints").inc()
            return None
        self._last_hints[agent_id] = digest
        record = {"agent_id": agent_id, "hints": hints, "runs": runs, "updated_at": now_rfc3339()}
        return dumps(record)

    def _trie_record(self, agent_id: str, entry: Entry) -> bytes | None:
        """The TrieEnvelope to send, or None when it is unchanged.

        Serialized once: the digest covers everything but `generated_at`, which is then
        spliced in front of the same bytes."""
        trie = trie_dict(agent_id, entry.state, self.config)
        generated_at = trie.pop("generated_at")
        body = dumps(trie)
        digest = _digest(body)
        if self._last_trie.get(agent_id) == digest:
            self.metrics.publish_skipped.labels("tries").inc()
            return None
        self._last_trie[agent_id] = digest
        return b'{"generated_at":' + dumps(generated_at) + b"," + body[1:]

    async def publish_pending(self, all_tries: bool = True) -> int:
        """Publish what changed since the last call; wait until the broker has it.

        Tries wait for their own cadence unless `all_tries` (rebalances, shutdown). Hints
        are queued first; tries are built in slices of `SLICE_S` with the loop let run in
        between, so the hints leave, and runs keep being learned, while tries are built.
        An agent whose record cannot be built or sent is retried alone, with backoff."""
        async with self._lock:
            batch = self.cache.take_to_publish()
            now = time.monotonic()
            batch += self.retries.due(now, {agent for agent, _ in batch})
            self._tries_due.update(batch)
            tries_now = all_tries or now - self._tries_sent_at >= TRIES_INTERVAL_S
            if not batch and not (tries_now and self._tries_due):
                return 0
            marks = [(e.consumed_at, e.run_end_ns) for _, e in batch]
            for _, entry in batch:
                entry.consumed_at = None
                entry.run_end_ns = None
            sends: list[Send] = []
            for agent_id, entry in batch:
                await self._send(sends, "hints", agent_id, entry, self._hints_record)
            tries = list(self._tries_due.items()) if tries_now else []
            if tries_now:
                self._tries_due.clear()
                self._tries_sent_at = now
            slice_end = time.perf_counter()  # yield first: the hints can leave right away
            for agent_id, entry in tries:
                if time.perf_counter() >= slice_end:
                    await asyncio.sleep(0)
                    slice_end = time.perf_counter() + SLICE_S
                await self._send(sends, "tries", agent_id, entry, self._trie_record)
            results = await asyncio.gather(*(s.delivery for s in sends), return_exceptions=True)
            for send, result in zip(sends, results, strict=True):
                if isinstance(result, BaseException):
                    self._failed(send.output, send.agent_id, send.entry, result)
                else:
                    self.metrics.published.labels(send.output).inc()
                    self.retries.succeeded(send.agent_id)
            self.metrics.publish_failing.set(len(self.retries))
            now_mono, now_ns = time.monotonic(), time.time_ns()
            for consumed_at, end_ns in marks:
                if consumed_at is not None:
                    self.metrics.consume_to_publish.observe(now_mono - consumed_at)
                if end_ns is not None:
                    self.metrics.end_to_publish.observe(max(0.0, (now_ns - end_ns) / 1e9))
            return len(batch)

    async def _send(
        self,
        sends: list[Send],
        output: str,
        agent_id: str,
        entry: Entry,
        build: Callable[[str, Entry], bytes | None],
    ) -> None:
        """Build one agent's record and queue it; a failure is that agent's alone."""
        topic = self.topics.hints if output == "hints" else self.topics.tries
        try:
            value = build(agent_id, entry)
            if value is None:
                return
            delivery = await self.producer.send(topic, value, key=agent_id.encode())
        except Exception as exc:  # too large, a bug in building, a closed producer
            self._failed(output, agent_id, entry, exc)
            return
        sends.append(Send(output, agent_id, entry, delivery))

    def _failed(self, output: str, agent_id: str, entry: Entry, error: BaseException) -> None:
        """Forget what was sent for the agent (so it is built again) and retry it later."""
        (self._last_hints if output == "hints" else self._last_trie).pop(agent_id, None)
        self.metrics.publish_failures.labels(output).inc()
        first = self.retries.failed(agent_id, entry, error, time.monotonic())
        log.log(
            logging.ERROR if first else logging.DEBUG,
            "publishing %s of agent %s failed; retrying it alone, with backoff",
            output,
            agent_id,
            extra={"error": repr(error)[:500], "failing_agents": len(self.retries)},
        )

    def forget(self) -> None:
        """Forget what was last published (after losing partitions; re-publish is harmless)
        and the agents waiting for a retry (their new owner publishes them)."""
        self._last_hints.clear()
        self._last_trie.clear()
        self.retries.clear()

    async def run_forever(self, interval_s: float) -> None:
        """The publish timer; a failed publish is retried with the next batch's data."""
        while True:
            started = time.monotonic()
            try:
                await self.publish_pending(all_tries=False)
            except asyncio.CancelledError:
                raise
            except Exception:  # per-agent failures are retried inside: this is a bug
                self.metrics.errors.labels("publish").inc()
                log.exception("publishing cycle failed; the next cycle starts over")
            # a cycle lets the loop run while it builds tries, so the next can start on time
            await asyncio.sleep(max(interval_s - (time.monotonic() - started), 0.01))
