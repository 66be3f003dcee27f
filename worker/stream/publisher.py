"""Coalescing publisher: every `publish_interval_ms`, the latest state of each changed agent.

Builds the trie and hints once per agent per interval (not per run), skips values equal to
the last published one (ignoring `generated_at` / `updated_at`), and sends HintsRecord to
the hints topic and TrieEnvelope to the tries topic, both keyed by agent id. Publishing is
at-least-once: the topics are compacted "latest state", so re-publishing is harmless.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from worker.learner import LearnerConfig, trie_json_and_hints
from worker.observability import WorkerMetrics
from worker.records import HintsRecord, dumps
from worker.settings import TopicSettings
from worker.stream.state import Entry, StateCache
from worker.timestamps import now_rfc3339

log = logging.getLogger(__name__)


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
        self._lock = asyncio.Lock()

    def _records(self, agent_id: str, entry: Entry) -> tuple[bytes | None, bytes]:
        """(hints value or None when unchanged/absent, trie value or b'' when unchanged)."""
        trie_value, hints = trie_json_and_hints(agent_id, entry.state, self.config)
        # compare without generated_at: everything from workflow_name on
        digest = _digest(trie_value[trie_value.find(b'"workflow_name"') :])
        if self._last_trie.get(agent_id) != digest:
            self._last_trie[agent_id] = digest
        else:
            trie_value = b""
        if not trie_value:
            self.metrics.publish_skipped.labels(self.topics.tries).inc()
        if hints is None:
            return None, trie_value
        content = dumps({"hints": hints.model_dump(), "runs": entry.state.runs})
        digest = _digest(content)
        if self._last_hints.get(agent_id) == digest:
            self.metrics.publish_skipped.labels(self.topics.hints).inc()
            return None, trie_value
        self._last_hints[agent_id] = digest
        record = HintsRecord(
            agent_id=agent_id, hints=hints, runs=entry.state.runs, updated_at=now_rfc3339()
        )
        return dumps(record), trie_value

    async def publish_pending(self) -> int:
        """Publish every agent changed since the last call; wait until the broker has them."""
        async with self._lock:
            batch = self.cache.take_to_publish()
            if not batch:
                return 0
            sends: list[tuple[Any, str, Entry]] = []
            marks = []
            for agent_id, entry in batch:
                marks.append((entry, entry.consumed_at, entry.run_end_ns))
                entry.consumed_at = None
                entry.run_end_ns = None
                hints, trie = self._records(agent_id, entry)
                key = agent_id.encode()
                if trie:
                    fut = await self.producer.send(self.topics.tries, trie, key=key)
                    sends.append((fut, "tries", entry))
                if hints is not None:
                    fut = await self.producer.send(self.topics.hints, hints, key=key)
                    sends.append((fut, "hints", entry))
            if sends:
                await asyncio.gather(*(fut for fut, _, _ in sends))
            now_mono, now_ns = time.monotonic(), time.time_ns()
            for _, what, _ in sends:
                (
                    self.metrics.hints_published
                    if what == "hints"
                    else self.metrics.tries_published
                ).inc()
            for _entry, consumed_at, end_ns in marks:
                if consumed_at is not None:
                    self.metrics.consume_to_publish.observe(now_mono - consumed_at)
                if end_ns is not None:
                    self.metrics.end_to_publish.observe(max(0.0, (now_ns - end_ns) / 1e9))
            return len(batch)

    def forget(self, agent_ids: set[str] | None = None) -> None:
        """Forget what was last published (after losing partitions; re-publish is harmless)."""
        if agent_ids is None:
            self._last_hints.clear()
            self._last_trie.clear()
            return
        for agent_id in agent_ids:
            self._last_hints.pop(agent_id, None)
            self._last_trie.pop(agent_id, None)

    async def run_forever(self, interval_s: float) -> None:
        """The publish timer; a failed publish is retried with the next batch's data."""
        while True:
            started = time.monotonic()
            try:
                await self.publish_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.errors.labels("publish").inc()
                log.exception("publishing hints failed; will retry")
                self._requeue_all()
            # under load a cycle takes longer: sleep at least as long as it took, so
            # publishing leaves the loop to consuming (capped: latest state within ~1 s)
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(interval_s - elapsed, min(elapsed, 0.25), 0.01))

    def _requeue_all(self) -> None:
        self.forget()
        for agent_id, entry in list(self.cache._entries.items()):
            self.cache._to_publish[agent_id] = entry
