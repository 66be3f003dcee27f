"""The faust app: one agent over the runs (+ rekey) topic, state in a RocksDB-backed table.

Flow per record: decode and check (DLQ on failure) -> re-route to the agent's home partition
when it arrived elsewhere -> skip duplicate run ids -> learn into the cached state. States
are written to the table right before each offset commit (`CommitHook`), and the publisher
publishes changed agents on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from worker.observability import HealthServer, WorkerMetrics
from worker.settings import Settings
from worker.stream.kafka_config import aiokafka_kwargs, broker_url, faust_credentials
from worker.stream.processor import Processor, Result
from worker.stream.publisher import Publisher
from worker.stream.state import StateCache

log = logging.getLogger("worker.stream")

TABLE_NAME = "agent-state"


class CommitHook(faust.Sensor):
    """Writes dirty agent states into the table before faust commits offsets.

    faust calls `on_commit_initiated` synchronously at the start of every commit (periodic,
    on rebalance, at shutdown); the commit then flushes the producer (changelog included)
    before committing offsets, so a committed offset never runs ahead of stored state.
    """

    def __init__(self, service: StreamService) -> None:
        super().__init__()
        self.service = service

    def on_commit_initiated(self, consumer: Any) -> Any:
        try:
            written = self.service.cache.flush_to_table()
        except Exception:
            self.service.metrics.errors.labels("state_write").inc()
            log.exception("writing agent states to the table failed")
            raise
        if written:
            self.service.metrics.state_writes.inc(written)
        return super().on_commit_initiated(consumer)


class StreamService:
    """Builds the faust app and owns everything around it (producer, publisher, health)."""

    def __init__(self, settings: Settings, partitions: int) -> None:
        self.settings = settings
        self.partitions = partitions
        self.metrics = WorkerMetrics()
        self.learner_config = settings.learner.to_config()
        self.app = self._make_app()
        self.table = self.app.Table(
            TABLE_NAME,
            default=None,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            help="agent id -> AgentState bytes (statistics and learned run ids)",
        )
        self.cache = StateCache(self.table, settings.state_cache_agents)
        self.processor = Processor(self.cache, self.learner_config, settings.limits, partitions)
        topics = settings.topics
        self.source = self.app.topic(
            topics.runs,
            topics.rekey_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )
        self.app.agent(self.source, name="learn")(self._agent)
        self.app.sensors.add(CommitHook(self))
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)
        self.producer: AIOKafkaProducer | None = None
        self.publisher: Publisher | None = None
        self.health = HealthServer(
            self.metrics, self.ready, self.healthy, before_scrape=self._update_gauges
        )
        self._recovered = False
        self._positions: dict[tuple[str, int], int] = {}
        self._publish_task: asyncio.Task[None] | None = None

    def _make_app(self) -> faust.App:
        s = self.settings
        kwargs: dict[str, Any] = {}
        credentials = faust_credentials(s)
        if credentials is not None:
            kwargs["broker_credentials"] = credentials
        return faust.App(
            s.group_id,
            broker=broker_url(s),
            store="rocksdb://",
            datadir=str(s.state_dir),
            autodiscover=False,
            web_enabled=False,
            processing_guarantee=s.processing_guarantee,
            broker_commit_interval=s.commit_interval_s,
            broker_client_id=s.kafka.client_id,
            table_standby_replicas=s.table_standby_replicas,
            topic_partitions=self.partitions,
            topic_replication_factor=s.topics.replication_factor,
            topic_allow_declare=True,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            worker_redirect_stdouts=False,
            key_serializer="raw",
            value_serializer="raw",
            **kwargs,
        )

    # --- the agent --------------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        runs_topic = self.settings.topics.runs
        metrics = self.metrics
        async for event in stream.events():
            started = time.perf_counter()
            message = event.message
            if message.topic == runs_topic:
                metrics.consumed.inc()
            try:
                result = self.processor.process(message.value, message.partition, event)
            except Exception as exc:  # a bug must not stop the partition: DLQ it, loudly
                metrics.errors.labels("process").inc()
                log.exception("unexpected error processing %s", _where(message))
                result = Result("rejected", reason="internal", detail=repr(exc)[:500])
            if result.kind == "learned":
                metrics.learned.inc()
            elif result.kind == "duplicate":
                metrics.duplicates.inc()
            elif result.kind == "rejected":
                await self._dead_letter(message, result)
            elif result.kind == "rekey":
                await self._rekey(message, result)
            self._positions[(message.topic, message.partition)] = message.offset + 1
            metrics.processing.observe(time.perf_counter() - started)

    async def _dead_letter(self, message: Any, result: Result) -> None:
        assert self.producer is not None
        headers = list(message.headers or [])
        headers += [
            ("error.reason", (result.reason or "unknown").encode()),
            ("error.detail", (result.detail or "").encode()[:4000]),
            ("source.topic", message.topic.encode()),
            ("source.partition", str(message.partition).encode()),
            ("source.offset", str(message.offset).encode()),
        ]
        await self.producer.send_and_wait(
            self.settings.topics.dlq, message.value, key=message.key, headers=headers
        )
        self.metrics.rejected.labels(result.reason or "unknown").inc()
        log.warning(
            "rejected record to DLQ",
            extra={"reason": result.reason, "detail": result.detail, "source": _where(message)},
        )

    async def _rekey(self, message: Any, result: Result) -> None:
        assert self.producer is not None and result.agent_id is not None
        await self.producer.send_and_wait(
            self.settings.topics.rekey_topic,
            message.value,
            key=result.agent_id.encode(),
            partition=result.partition,
            headers=list(message.headers or []),
        )
        self.metrics.rekeyed.inc()

    # --- rebalances -------------------------------------------------------------------------

    async def _on_revoked(self, app: Any, revoked: set[Any], **_: Any) -> None:
        self._recovered = False
        # offsets were committed (and states written) by faust before this signal
        if self.publisher is not None:
            await self.publisher.publish_pending()

    async def _on_assigned(self, app: Any, assigned: set[Any], **_: Any) -> None:
        partitions = {tp.partition for tp in assigned if tp.topic == self.settings.topics.runs}
        dropped = self.cache.keep_partitions(partitions)
        if dropped:
            log.info("forgot %d agents of revoked partitions", dropped)
        for key in [k for k in self._positions if k[1] not in partitions]:
            del self._positions[key]
        if self.publisher is not None:
            self.publisher.forget()

    async def _on_rebalance_complete(self, app: Any, **_: Any) -> None:
        self._recovered = True
        assigned = sorted(
            tp.partition
            for tp in app.consumer.assignment()
            if tp.topic == self.settings.topics.runs
        )
        log.info("partitions recovered, processing", extra={"partitions": assigned})

    # --- health -----------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if not self._recovered:
            return False, "waiting for partition assignment and table recovery"
        if self.app.rebalancing:
            return False, "rebalancing"
        return True, "assigned partitions recovered"

    def healthy(self) -> tuple[bool, str]:
        crashed = getattr(self.app, "crash_reason", None)
        if crashed is not None:
            return False, f"crashed: {crashed!r}"
        if self._publish_task is not None and self._publish_task.done():
            return False, "publisher stopped"
        return True, "running"

    def _update_gauges(self) -> None:
        self.metrics.agents.set(len(self.cache))
        self.metrics.state_bytes.set(self.cache.state_bytes)
        self.metrics.ready.set(1 if self.ready()[0] else 0)
        try:
            consumer = self.app.consumer
            topics = {self.settings.topics.runs, self.settings.topics.rekey_topic}
            for tp in consumer.assignment():
                if tp.topic not in topics:
                    continue
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                position = self._positions.get((tp.topic, tp.partition))
                if position is None:
                    position = consumer._committed_offset.get(tp) or 0
                lag = max(0, highwater - position)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        except Exception:  # metrics must never break a scrape
            log.debug("consumer lag unavailable", exc_info=True)

    # --- lifecycle --------------------------------------------------------------------------

    async def start_aux(self) -> None:
        """Start the output producer, the publisher timer and the health server."""
        s = self.settings
        self.producer = AIOKafkaProducer(
            **aiokafka_kwargs(s), acks="all", enable_idempotence=True, linger_ms=5
        )
        await self.producer.start()
        self.publisher = Publisher(
            self.producer, self.cache, self.learner_config, s.topics, self.metrics
        )
        self._publish_task = asyncio.create_task(
            self.publisher.run_forever(s.publish_interval_ms / 1000), name="publisher"
        )
        await self.health.start(s.metrics_host, s.metrics_port)
        log.info("metrics and health on %s:%s", s.metrics_host, self.health.port)

    async def stop_aux(self) -> None:
        """After faust committed its last offsets: publish what is left, then stop."""
        if self._publish_task is not None:
            self._publish_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._publish_task
        if self.publisher is not None:
            try:
                published = await self.publisher.publish_pending()
                log.info("final publish done", extra={"agents": published})
            except Exception:
                log.exception("final publish failed")
        if self.producer is not None:
            await self.producer.stop()
        await self.health.stop()


def _where(message: Any) -> str:
    return f"{message.topic}[{message.partition}]@{message.offset}"
