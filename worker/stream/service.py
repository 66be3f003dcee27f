"""The streaming worker assembled: faust app, state, record loop, outputs, health.

Flow per record: decode and check (DLQ on failure) -> re-route to the agent's home partition
when it arrived elsewhere -> skip duplicate run ids -> learn into the cached state. States
are written to the table at each offset commit (`checkpoint`), and the publisher
publishes changed agents on a timer. This module only builds and wires these pieces and
starts and stops what faust does not (output producer, publisher, health server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer

from worker.kafka.clients import client_kwargs
from worker.kafka.topics import TopicLayout
from worker.observability.health import HealthServer
from worker.observability.metrics import WorkerMetrics
from worker.settings import Settings
from worker.stream.checkpoint import guard_commits
from worker.stream.dead_letter import DeadLetters
from worker.stream.faust_app import make_app, make_source, make_table
from worker.stream.offsets import Offsets
from worker.stream.pacing import background_share
from worker.stream.processor import Processor
from worker.stream.publisher import Publisher
from worker.stream.rebalance import Rebalances
from worker.stream.record_loop import RecordLoop
from worker.stream.state_cache import StateCache

log = logging.getLogger(__name__)


class StreamService:
    """Builds the faust app and owns everything around it (producer, publisher, health)."""

    def __init__(self, settings: Settings, layout: TopicLayout) -> None:
        self.settings = settings
        self.layout = layout
        self.partitions = partitions = layout.partitions
        topics = settings.topics
        self.source_topics = {topics.runs, topics.rekey_topic}
        self.client_kwargs = client_kwargs(settings.bootstrap_servers, settings.kafka)
        self.metrics = WorkerMetrics()
        self.learner_config = settings.learner
        self.app = make_app(settings, partitions)
        self.table = make_table(self.app, partitions)
        self.cache = StateCache(
            self.table, settings.state_cache_bytes, window=settings.learner.dedupe_window
        )
        self.metrics.state_cache_limit.set(settings.state_cache_bytes)
        self.offsets = Offsets(self.client_kwargs)
        processor = Processor(self.cache, self.learner_config, settings.limits, partitions)
        self.records = RecordLoop(
            topics.runs,
            topics.rekey_topic,
            processor,
            self.offsets,
            self.metrics,
            lambda: self.app.consumer,
        )
        self.app.agent(make_source(self.app, settings, partitions), name="learn")(self.records)
        self.rebalances = Rebalances(
            topics.runs,
            self.source_topics,
            self.cache,
            self.table,
            self.offsets,
            self.records.sends,
            self.metrics,
        )
        self.rebalances.connect(self.app)
        self.producer: AIOKafkaProducer | None = None
        self.publisher: Publisher | None = None
        self.health = HealthServer(
            self.metrics, self.ready, self.healthy, before_scrape=self._update_gauges
        )
        self._publish_task: asyncio.Task[None] | None = None

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
        failing = self.publisher.retries.describe() if self.publisher else None
        # still healthy: a restart would not help an agent whose record cannot be sent
        return True, f"running; {failing}" if failing else "running"

    def _update_gauges(self) -> None:
        self.metrics.agents.set(len(self.cache))
        self.metrics.state_bytes.set(self.cache.state_bytes)
        self.metrics.agents_decoded.set(self.cache.decoded_count)
        self.metrics.observe_state_writes(self.cache.written_bytes)
        self.metrics.ready.set(1 if self.ready()[0] else 0)
        try:
            for topic, partition, lag in self.offsets.lags(self.app.consumer, self.source_topics):
                self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)
        except Exception:  # metrics must never break a scrape
            log.debug("consumer lag unavailable", exc_info=True)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Before faust consumes: the output producer, the publisher timer, the health server."""
        s = self.settings
        guard_commits(
            self.app, self.table, self.cache, self.metrics, self._before_commit, self._share
        )
        outputs = (s.topics.hints, s.topics.tries, s.topics.dlq, s.topics.rekey_topic)
        limits = [self.layout.record_limit(t) for t in outputs]
        self.producer = AIOKafkaProducer(
            **self.client_kwargs,
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
        await self.producer.start()
        dlq_partitions = await self.producer.partitions_for(s.topics.dlq)
        aligned = len(dlq_partitions) == self.partitions
        if not aligned:
            log.warning(
                "DLQ topic has %d partitions, %s has %d: a record replayed after a crash can "
                "reach the DLQ twice",
                len(dlq_partitions),
                s.topics.runs,
                self.partitions,
            )
        self.records.sends.producer = self.producer
        dead_letters = DeadLetters(
            self.records.sends,
            s.topics.dlq,
            len(dlq_partitions),
            self.source_topics,
            aligned,
            self.layout.record_limit(s.topics.dlq),
            self.client_kwargs,
            self.metrics,
        )
        self.publisher = Publisher(
            self.producer, self.cache, self.learner_config, s.topics, self.metrics
        )
        self.records.dead_letters = self.rebalances.dead_letters = dead_letters
        self.rebalances.publisher = self.publisher
        self._publish_task = asyncio.create_task(
            self.publisher.run_forever(
                s.publish_interval_ms / 1000, s.commit_interval_s, self._share
            ),
            name="publisher",
        )
        await self.health.start(s.metrics_host, s.metrics_port)
        log.info("metrics and health on %s:%s", s.metrics_host, self.health.port)

    def _share(self) -> float:
        """How much of the loop a commit's work may take: paced while the runs are live,
        at full speed in a backlog and when stopping (see `pacing`)."""
        if self.app.consumer.should_stop:
            return 1.0
        return background_share(time.time() - self.records.last_timestamp)

    async def _before_commit(self, share: float) -> int:
        """What committing offsets waits for besides the changelog: the dead letters and
        rekeyed runs sent so far acknowledged, and the hints and tries of every run learned
        so far published (the tries built with at most `share` of the loop). Without the
        latter, a crash right after a commit left agents' outputs behind their runs until
        their next run (the replay skips them as learned)."""
        waited = await self.records.sends.wait()
        if self.publisher is not None:
            await self.publisher.publish_pending(share)
        return waited

    async def stop(self) -> None:
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
