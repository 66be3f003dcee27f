"""The streaming worker assembled: faust app, state, record loop, outputs, health.

Flow per record: decode and check (DLQ on failure) -> re-route to the agent's home partition
when it arrived elsewhere -> skip duplicate run ids -> learn into the agent's state. At each
offset commit the `Checkpoint` stores what was learned and publishes it before the offsets
go; `Rebalances` does the same before partitions leave; the publisher also publishes changed
agents on its timers. This module only builds and wires these pieces (every one complete
when built: construct the service inside the running event loop, which the Kafka producer
needs) and starts and stops what faust does not (output producer, publisher, health server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from worker.kafka.clients import client_kwargs
from worker.kafka.topics import TopicLayout
from worker.observability.health import HealthServer
from worker.observability.metrics import WorkerMetrics
from worker.settings import Settings
from worker.stream.checkpoint import Checkpoint
from worker.stream.dead_letter import DeadLetters
from worker.stream.faust_app import make_app, make_source, make_table
from worker.stream.offsets import Offsets
from worker.stream.pacing import background_share
from worker.stream.pending_sends import PendingSends
from worker.stream.processor import Processor
from worker.stream.publish_queue import PublishQueue
from worker.stream.publisher import Publisher
from worker.stream.rebalance import Rebalances
from worker.stream.record_loop import RecordLoop
from worker.stream.state.store import StateStore

log = logging.getLogger(__name__)


def output_topics(settings: Settings) -> tuple[str, ...]:
    """The topics the output producer writes besides the state changelog."""
    topics = settings.topics
    return (topics.hints, topics.tries, topics.dlq, topics.rekey_topic)


def output_producer(settings: Settings, layout: TopicLayout) -> AIOKafkaProducer:
    """The producer of every output (hints, tries, dead letters, rekeyed runs) and of the
    state changelog's batches: idempotent, batches that fit every output topic."""
    limits = [layout.record_limit(t) for t in output_topics(settings)]
    return AIOKafkaProducer(
        **client_kwargs(settings.bootstrap_servers, settings.kafka),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        # a batch per partition collects SEND_DELAY_S of dead letters or rekeyed runs; a
        # batch of several records must fit every output topic (a larger single record
        # gets a batch of its own)
        max_batch_size=min(256 * 1024, *limits),
        # the topics' own limits are the ones that count
        max_request_size=max(limits),
    )


async def track_topics(producer: AIOKafkaProducer, topics: tuple[str, ...]) -> None:
    """Keep `topics` in every metadata fetch of the (started) producer.

    aiokafka's producer starts knowing every topic (its bootstrap fetches them all) but
    tracking none, and from its first send to a topic it did not know (the state changelog,
    which faust creates after the producer starts) it fetches only the topics it tracks: the
    others drop out of its metadata. A batch already queued for one of them then finds no
    leader until it expires (after request_timeout_ms, 40 s), and the sequence number it
    took leaves the idempotent producer failing every later batch of that partition
    (`publisher.PRODUCER_LOST`). Tracked from the start, the outputs stay in every fetch."""
    await asyncio.gather(*(producer.client.add_topic(topic) for topic in topics))


class StreamService:
    """Builds the faust app and owns everything around it (producer, publisher, health)."""

    def __init__(self, settings: Settings, layout: TopicLayout) -> None:
        self.settings = s = settings
        topics = s.topics
        partitions = layout.partitions
        self.source_topics = {topics.runs, topics.rekey_topic}
        kafka = client_kwargs(s.bootstrap_servers, s.kafka)
        self.metrics = WorkerMetrics()
        self.metrics.state_cache_limit.set(s.state_cache_bytes)
        self.app = make_app(s, partitions)
        self.table = make_table(self.app, partitions)
        self.store = StateStore(
            self.table, s.state_cache_bytes, window=s.learner.dedupe_window, config=s.learner
        )
        self.to_publish = PublishQueue(self.store.cache)
        self.offsets = Offsets(kafka)
        self.producer = output_producer(s, layout)
        self.table.send_through(self.producer)
        sends = PendingSends(self.producer)
        dlq_partitions = layout.partitions_of(topics.dlq)
        aligned = dlq_partitions == partitions
        if not aligned:
            log.warning(
                "DLQ topic has %d partitions, %s has %d: a record replayed after a crash can "
                "reach the DLQ twice",
                dlq_partitions,
                topics.runs,
                partitions,
            )
        dead_letters = DeadLetters(
            sends,
            topics.dlq,
            dlq_partitions,
            self.source_topics,
            aligned,
            layout.record_limit(topics.dlq),
            kafka,
            self.metrics,
        )
        self.publisher = Publisher(
            self.producer,
            self.store,
            self.to_publish,
            s.learner,
            topics,
            self.metrics,
            self.offsets.positions,
        )
        self.checkpoint = Checkpoint(self.store, self.table, sends, self.publisher, self.metrics)
        processor = Processor(self.store, self.to_publish, s.learner, s.limits, partitions)
        self.records = RecordLoop(
            topics.runs,
            topics.rekey_topic,
            processor,
            self.offsets,
            sends,
            dead_letters,
            self.metrics,
            self.app,
        )
        self.app.agent(make_source(self.app, s, partitions), name="learn")(self.records)
        self.rebalances = Rebalances(
            topics.runs,
            self.source_topics,
            self.store,
            self.to_publish,
            self.checkpoint,
            self.offsets,
            dead_letters,
            self.publisher,
        )
        self.rebalances.connect(self.app)
        self.health = HealthServer(
            self.metrics, self.ready, self.healthy, before_scrape=self._update_gauges
        )
        self._publish_task: asyncio.Future[Any] | None = None

    # --- health -----------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        if not self.rebalances.recovered:
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
        lost = self.table.failure or self.records.sends.failure
        if lost is not None:  # no offset can be committed again: restart and replay
            return False, f"a send the offsets depend on failed: {lost!r}"
        if self.publisher.producer_lost is not None:  # a new producer sends again
            return False, f"the output producer cannot send again: {self.publisher.producer_lost!r}"
        failing = self.publisher.retries.describe()
        # still healthy: a restart would not help an agent whose record cannot be sent
        return True, f"running; {failing}" if failing else "running"

    def _update_gauges(self) -> None:
        self.metrics.agents.set(len(self.store))
        self.metrics.state_bytes.set(self.store.state_bytes)
        self.metrics.agents_decoded.set(self.store.decoded_count)
        self.metrics.observe_state_writes(self.store.written_bytes)
        self.metrics.observe_state_cache(self.store.decodes, self.store.cache.serialized_by)
        self.metrics.ready.set(1 if self.ready()[0] else 0)
        try:
            for topic, partition, lag in self.offsets.lags(self.app.consumer, self.source_topics):
                self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)
        except Exception:  # metrics must never break a scrape
            log.debug("consumer lag unavailable", exc_info=True)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Before faust consumes: the commit path, the output producer, the publisher
        timers, the health server."""
        s = self.settings
        self.checkpoint.install(self.app, self._share)
        await self.producer.start()
        await track_topics(self.producer, output_topics(s))
        self._publish_task = asyncio.gather(
            self.publisher.run_forever(
                s.publish_interval_ms / 1000, s.tries_interval_s, self._share, s.tries_budget
            ),
            self._catch_up_forever(s.tries_interval_s),
        )
        await self.health.start(s.metrics_host, s.metrics_port)
        log.info("metrics and health on %s:%s", s.metrics_host, self.health.port)

    async def _catch_up_forever(self, interval_s: float) -> None:
        """Commit, once their tries are out, the offsets faust asked to commit before (an
        idle input would otherwise leave them uncommitted until the next record)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.checkpoint.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next faust commit or catch-up tries again
                log.warning("committing covered offsets failed", exc_info=True)

    def _share(self) -> float:
        """How much of the loop a commit's work may take: paced while the runs are live,
        at full speed in a backlog and when stopping (see `pacing`)."""
        if self.app.consumer.should_stop:
            return 1.0
        return background_share(time.time() - self.records.last_timestamp)

    async def stop(self) -> None:
        """After faust committed its last offsets: publish what is left, then stop."""
        if self._publish_task is not None:
            self._publish_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._publish_task
        try:
            published = await self.publisher.publish_pending()
            log.info("final publish done", extra={"agents": published})
        except Exception:
            log.exception("final publish failed")
        await self.producer.stop()
        await self.health.stop()
