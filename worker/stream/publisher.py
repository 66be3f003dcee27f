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


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


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
        between, so the hints leave, and runs keep being learned, while tries are built."""
        async with self._lock:
            batch = self.cache.take_to_publish()
            self._tries_due.update(batch)
            now = time.monotonic()
            tries_now = all_tries or now - self._tries_sent_at >= TRIES_INTERVAL_S
            if not batch and not (tries_now and self._tries_due):
                return 0
            marks = [(e.consumed_at, e.run_end_ns) for _, e in batch]
            for _, entry in batch:
                entry.consumed_at = None
                entry.run_end_ns = None
            sends: list[tuple[Any, Any]] = []
            for agent_id, entry in batch:
                value = self._hints_record(agent_id, entry)
                if value is not None:
                    fut = await self.producer.send(self.topics.hints, value, key=agent_id.encode())
                    sends.append((fut, self.metrics.hints_published))
            tries = list(self._tries_due.items()) if tries_now else []
            if tries_now:
                self._tries_due.clear()
                self._tries_sent_at = now
            slice_end = time.perf_counter()  # yield first: the hints can leave right away
            for agent_id, entry in tries:
                if time.perf_counter() >= slice_end:
                    await asyncio.sleep(0)
                    slice_end = time.perf_counter() + SLICE_S
                value = self._trie_record(agent_id, entry)
                if value is not None:
                    fut = await self.producer.send(self.topics.tries, value, key=agent_id.encode())
                    sends.append((fut, self.metrics.tries_published))
            if sends:
                await asyncio.gather(*(fut for fut, _ in sends))
            now_mono, now_ns = time.monotonic(), time.time_ns()
            for _, counter in sends:
                counter.inc()
            for consumed_at, end_ns in marks:
                if consumed_at is not None:
                    self.metrics.consume_to_publish.observe(now_mono - consumed_at)
                if end_ns is not None:
                    self.metrics.end_to_publish.observe(max(0.0, (now_ns - end_ns) / 1e9))
            return len(batch)

    def forget(self) -> None:
        """Forget what was last published (after losing partitions; re-publish is harmless)."""
        self._last_hints.clear()
        self._last_trie.clear()

    async def run_forever(self, interval_s: float) -> None:
        """The publish timer; a failed publish is retried with the next batch's data."""
        while True:
            started = time.monotonic()
            try:
                await self.publish_pending(all_tries=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.errors.labels("publish").inc()
                log.exception("publishing hints failed; will retry")
                self.forget()
                self.cache.publish_all_again()
            # a cycle lets the loop run while it builds tries, so the next can start on time
            await asyncio.sleep(max(interval_s - (time.monotonic() - started), 0.01))
