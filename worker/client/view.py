"""SPEC 8's view: follow the compacted `agent-hints` and `agent-tries` topics into a store.

Every partition of both topics is read from the beginning; the view is *ready* once it
reached the end offsets it saw when it started, then keeps following. No consumer group,
nothing committed: every router holds the whole (small) latest state. Topics or partitions
that appear later are picked up from their beginning by a periodic metadata check.

It never raises into its owner: a broker that is down at start is retried until it answers
(the view is simply not ready meanwhile), a bad record is counted by the store and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from worker.client.store import HintsStore, Topic
from worker.kafka.clients import client_kwargs
from worker.settings import DEFAULT_TOPICS, KafkaSettings

log = logging.getLogger("worker.client.view")

#: records handled per batch before the loop lets other tasks (requests) run
MAX_BATCH_RECORDS = 500


class HintsView:
    """A HintsStore kept up to date from Kafka by a background task."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        hints_topic: str = DEFAULT_TOPICS.hints,
        tries_topic: str = DEFAULT_TOPICS.tries,
        kafka: KafkaSettings | None = None,
        store: HintsStore | None = None,
        retry_s: float = 2.0,
        metadata_refresh_s: float = 10.0,
    ) -> None:
        self.store = store if store is not None else HintsStore()
        self.topics: dict[str, Topic] = {hints_topic: "hints", tries_topic: "tries"}
        self._client_kwargs = client_kwargs(bootstrap_servers, kafka)
        self._retry_s = retry_s
        self._metadata_refresh_s = metadata_refresh_s
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        #: partition -> end offset seen at start; ready once every position reached it
        self._targets: dict[TopicPartition, int] | None = None
        self._assigned: dict[TopicPartition, Topic] = {}
        self._lag = 0
        self._status = "not started"
        self.started_at: float | None = None
        #: seconds from start() to ready
        self.load_s: float | None = None

    # --- owner's side ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def status(self) -> str:
        """One line on what the view is doing (for /readyz and logs)."""
        return self._status

    @property
    def lag(self) -> int:
        """Records on the topics not read yet (as of the last fetch)."""
        return self._lag

    async def start(self) -> None:
        """Start following in the background; returns at once (see `wait_ready`)."""
        if self._task is None:
            self.started_at = time.monotonic()
            self._task = asyncio.create_task(self._run(), name="hints-view")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until loaded; False when `timeout` seconds passed first."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> HintsView:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the background task --------------------------------------------------------------

    async def _run(self) -> None:
        consumer = await self._connect()
        try:
            await self._follow(consumer)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _connect(self) -> AIOKafkaConsumer:
        """A started consumer, retrying every `retry_s` while the broker cannot be reached."""
        failures = 0
        while True:
            consumer = AIOKafkaConsumer(
                **self._client_kwargs,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                request_timeout_ms=15_000,
            )
            self._status = "connecting"
            try:
                await consumer.start()
                return consumer
            except (KafkaError, OSError) as exc:
                failures += 1
                self._failed(f"broker unavailable: {exc!r}", failures)
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(self._retry_s)

    def _failed(self, status: str, failures: int) -> None:
        self._status = status
        level = logging.WARNING if failures in (1, 10) or failures % 100 == 0 else logging.DEBUG
        log.log(level, "hints view: %s; retrying every %ss", status, self._retry_s)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        """Read and apply records forever; errors are logged and the loop goes on."""
        failures = 0
        refreshed = 0.0
        while True:
            try:
                if self._targets is None:  # the first success fixes what "loaded" means
                    await self._refresh_partitions(consumer)
                    refreshed = time.monotonic()
                    self._targets = await consumer.end_offsets(list(self._assigned))
                    self._status = "loading"
                elif time.monotonic() - refreshed >= self._metadata_refresh_s:
                    await self._refresh_partitions(consumer)
                    refreshed = time.monotonic()
                await self._read_batch(consumer)
                if not self.ready:
                    await self._check_loaded(consumer)
                await self._update_lag(consumer)
                if failures:
                    failures = 0
                    self._status = "ready" if self.ready else "loading"
            except (KafkaError, OSError) as exc:
                failures += 1
                self._failed(f"broker unavailable: {exc!r}", failures)
                await asyncio.sleep(self._retry_s)
            except Exception:  # never let the view die while its owner keeps serving
                failures += 1
                self._status = "internal error (see log); retrying"
                log.exception("hints view: unexpected error; retrying")
                await asyncio.sleep(self._retry_s)
            await asyncio.sleep(0)  # a large catch-up never starves the requests

    async def _read_batch(self, consumer: AIOKafkaConsumer) -> None:
        if not self._assigned:
            await asyncio.sleep(0.5)
            return
        batches = await consumer.getmany(timeout_ms=500, max_records=MAX_BATCH_RECORDS)
        store = self.store
        for tp, records in batches.items():
            topic = self._assigned.get(tp)
            if topic is not None:
                for record in records:
                    store.apply(topic, record.key, record.value)

    async def _refresh_partitions(self, consumer: AIOKafkaConsumer) -> None:
        """Assign every partition of both topics; new ones start at their beginning."""
        cluster: Any = await consumer._client.fetch_all_metadata()  # no public call for this
        wanted: dict[TopicPartition, Topic] = {}
        for name, topic in self.topics.items():
            for partition in cluster.partitions_for_topic(name) or ():
                wanted[TopicPartition(name, partition)] = topic
        if wanted.keys() == self._assigned.keys():
            return
        missing = [name for name in self.topics if not cluster.partitions_for_topic(name)]
        if missing:
            log.info("hints view: topic(s) %s do not exist yet; following when they do", missing)
        positions = {tp: await consumer.position(tp) for tp in self._assigned if tp in wanted}
        consumer.assign(list(wanted))  # replaces the assignment: restore kept positions
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        new = [tp for tp in wanted if tp not in positions]
        if new:
            await consumer.seek_to_beginning(*new)
        self._assigned = wanted

    async def _check_loaded(self, consumer: AIOKafkaConsumer) -> None:
        assert self._targets is not None
        for tp, end in self._targets.items():
            if tp in self._assigned and await consumer.position(tp) < end:
                return
        self._ready.set()
        self._status = "ready"
        if self.started_at is not None:
            self.load_s = time.monotonic() - self.started_at
        log.info(
            "hints view ready",
            extra={
                "agents": len(self.store.hints),
                "tries": len(self.store.tries),
                "load_s": round(self.load_s or 0.0, 3),
            },
        )

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag = 0
        for tp in self._assigned:
            high = consumer.highwater(tp)
            if high is not None:
                lag += max(0, high - await consumer.position(tp))
        self._lag = lag
