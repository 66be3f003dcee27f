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
import os
import time
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import Counter

from worker.observability import HealthServer, WorkerMetrics
from worker.settings import Settings
from worker.stream.consumer import EagerTransport
from worker.stream.kafka_config import aiokafka_kwargs, broker_url, faust_credentials
from worker.stream.processor import Processor, Result
from worker.stream.publisher import Publisher
from worker.stream.state import StateCache, StateTable

log = logging.getLogger("worker.stream")

TABLE_NAME = "agent-state"
#: exit code when the consumer skipped records (restart the worker: nothing is lost)
EXIT_SKIPPED = 75
#: how far back (records) the DLQ partition is searched for what was already dead-lettered
DLQ_SCAN_LIMIT = 100_000


class WorkerApp(faust.App):
    """faust's app with the tuned consumer (see `worker.stream.consumer`)."""

    #: fetch batching the consumer thread applies (set from the settings)
    fetch_min_bytes = 1
    fetch_max_wait_ms = 1500

    def _new_transport(self) -> EagerTransport:
        return EagerTransport(self.conf.broker_consumer, self)


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
        self.dlq_skipped = Counter(
            "agent_hints_dlq_replays_skipped",
            "Rejected records replayed after a crash and found already in the DLQ",
            registry=self.metrics.registry,
        )
        self.learner_config = settings.learner.to_config()
        self.app = self._make_app()
        self.table: StateTable = self.app.tables.add(
            StateTable(
                self.app,
                name=TABLE_NAME,
                default=None,
                beacon=self.app.tables.beacon,
                partitions=partitions,
                key_type=bytes,
                value_type=bytes,
                help="agent id -> AgentState bytes (statistics and learned run ids)",
            )
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
        self._source_topics = {topics.runs, topics.rekey_topic}
        #: partitions of agent-runs this worker owns (between assignment and revocation)
        self._owned: set[int] = set()
        self.cache.owned = self._owned_partitions
        self._positions: dict[tuple[str, int], int] = {}
        #: DLQ partition i gets the rejects of source partition i (when the counts match)
        self._dlq_aligned = False
        self._dlq_marks: dict[tuple[str, int], int] = {}
        self._dlq_loaded: set[int] = set()
        #: next offset each source partition must deliver, and pending seek-backs
        self._expected: dict[tuple[str, int], int] = {}
        self._publish_task: asyncio.Task[None] | None = None

    def _make_app(self) -> faust.App:
        s = self.settings
        kwargs: dict[str, Any] = {}
        credentials = faust_credentials(s)
        if credentials is not None:
            kwargs["broker_credentials"] = credentials
        app = WorkerApp(
            s.group_id,
            broker=broker_url(s),
            store="rocksdb://",
            datadir=str(s.state_dir),
            autodiscover=False,
            web_enabled=False,
            processing_guarantee=s.processing_guarantee,
            broker_commit_interval=s.commit_interval_s,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
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
        app.fetch_min_bytes = s.fetch_min_bytes
        app.fetch_max_wait_ms = s.fetch_max_wait_ms
        return app

    # --- the agent --------------------------------------------------------------------------

    async def _agent(self, stream: Any) -> None:
        runs_topic = self.settings.topics.runs
        metrics = self.metrics
        expected = self._expected
        yielded_at = time.perf_counter()
        async for event in stream.events():
            started = time.perf_counter()
            message = event.message
            key = (message.topic, message.partition)
            if expected.get(key) != message.offset:  # first record, or a jump: check it
                await self._check_sequence(message)
            expected[key] = message.offset + 1
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
            self._positions[key] = message.offset + 1
            metrics.processing.observe(time.perf_counter() - started)
            if started - yielded_at > 0.02:
                await asyncio.sleep(0)
                yielded_at = time.perf_counter()

    async def _check_sequence(self, message: Any) -> None:
        """Stop the process rather than let faust commit over records it skipped.

        After a rebalance with a changelog restore (seen after a lost disk), faust/aiokafka can
        hand the agent a record from beyond the next offset of a partition; faust then counts
        the skipped range as done (a "gap") and the next commit goes over it, so those runs
        would never be learned. Every record must follow the one before (or the committed
        offset, after an assignment). On a jump, the range is read from the broker: if it
        holds records, the process exits at once (`EXIT_SKIPPED`, no commit, no flush): on
        restart the partition is replayed from its committed offset and nothing is lost. A
        range without records (transaction markers, retention) is accepted.
        """
        key = (message.topic, message.partition)
        offset = message.offset
        expected = self._expected.get(key)
        if expected is None:
            expected = self.app.consumer._committed_offset.get(message.tp)
        if expected is not None and offset > expected:
            skipped = await self._count_records(message.topic, message.partition, expected, offset)
            if skipped:
                log.error(
                    "the consumer skipped %d records (%d..%d) of %s[%d]; exiting without a "
                    "commit so that they are read again after the restart",
                    skipped,
                    expected,
                    offset - 1,
                    *key,
                )
                logging.shutdown()
                os._exit(EXIT_SKIPPED)

    async def _count_records(self, topic: str, partition: int, start: int, end: int) -> int:
        """How many records offsets start..end-1 of topic[partition] hold (a side consumer)."""
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(
            **aiokafka_kwargs(self.settings), enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records = [r for r in batch.get(tp, ()) if start <= r.offset < end]
                if records or await consumer.position(tp) >= end:
                    return len(records)
            return end - start  # cannot tell: assume the worst
        finally:
            await consumer.stop()

    async def _dead_letter(self, message: Any, result: Result) -> None:
        """Send the record to the DLQ once, also when it is replayed after a crash.

        DLQ records go to the DLQ partition numbered like their source partition, sent one at
        a time in source order. So the last DLQ record from a source partition tells how far
        that partition was dead-lettered: a replayed record at or below it is skipped."""
        assert self.producer is not None
        source = (message.topic, message.partition)
        mark = await self._dlq_mark(source)
        if mark is not None and message.offset <= mark:
            self.dlq_skipped.inc()
            log.info("record already in the DLQ, not sent again", extra={"source": _where(message)})
            return
        headers = list(message.headers or [])
        headers += [
            ("error.reason", (result.reason or "unknown").encode()),
            ("error.detail", (result.detail or "").encode()[:4000]),
            ("source.topic", message.topic.encode()),
            ("source.partition", str(message.partition).encode()),
            ("source.offset", str(message.offset).encode()),
        ]
        await self.producer.send_and_wait(
            self.settings.topics.dlq,
            message.value,
            key=message.key,
            headers=headers,
            partition=message.partition if self._dlq_aligned else None,
        )
        if self._dlq_aligned:
            self._dlq_marks[source] = message.offset
        self.metrics.rejected.labels(result.reason or "unknown").inc()
        log.warning(
            "rejected record to DLQ",
            extra={"reason": result.reason, "detail": result.detail, "source": _where(message)},
        )

    async def _dlq_mark(self, source: tuple[str, int]) -> int | None:
        """Highest offset of `source` (topic, partition) already in the DLQ (None: none)."""
        if not self._dlq_aligned:
            return None
        if source[1] not in self._dlq_loaded:
            self._dlq_marks.update(await self._read_dlq_marks(source[1]))
            self._dlq_loaded.add(source[1])
        return self._dlq_marks.get(source)

    async def _read_dlq_marks(self, partition: int) -> dict[tuple[str, int], int]:
        """Read DLQ partition `partition` backwards until the last record of each source."""
        dlq = self.settings.topics.dlq
        tp = TopicPartition(dlq, partition)
        consumer = AIOKafkaConsumer(
            **aiokafka_kwargs(self.settings), enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        marks: dict[tuple[str, int], int] = {}
        try:
            consumer.assign([tp])
            begin = (await consumer.beginning_offsets([tp]))[tp]
            high = (await consumer.end_offsets([tp]))[tp]
            floor = max(begin, high - DLQ_SCAN_LIMIT)
            while high > floor and len(marks) < len(self._source_topics):
                low = max(floor, high - 1000)
                consumer.seek(tp, low)
                records = []
                deadline = time.monotonic() + 60
                while await consumer.position(tp) < high:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"reading {dlq}[{partition}] timed out")
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    records += [r for r in batch.get(tp, ()) if r.offset < high]
                for record in reversed(records):
                    h = {k: v for k, v in (record.headers or ())}
                    try:
                        topic = h["source.topic"].decode()
                        key = (topic, int(h["source.partition"]))
                        offset = int(h["source.offset"])
                    except (KeyError, ValueError, UnicodeDecodeError):
                        continue
                    if key[1] == partition and topic in self._source_topics:
                        marks.setdefault(key, offset)
                high = low
        finally:
            await consumer.stop()
        log.info("DLQ marks read", extra={"partition": partition, "marks": marks})
        return marks

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
        """Before the partitions go to another worker: store what was learned, then forget it.

        faust has stopped the agent and waited for in-flight records here, but it does not
        commit offsets on revocation, so the new owner replays from the last commit. Writing
        the states now (and waiting for the changelog) lets it find those runs learned; the
        replay skips them by id. Forgetting the entries means a state of a partition this
        worker no longer owns can never be written later (a stale write after the new owner's
        would lose its runs); they are re-read from the table if the partition comes back.
        """
        self._recovered = False
        lost = {tp.partition for tp in revoked if tp.topic in self._source_topics}
        written = self.cache.flush_to_table()
        if written:
            self.metrics.state_writes.inc(written)
        await self.table.wait_changelog()
        if self.publisher is not None:
            await self.publisher.publish_pending()
        self._owned -= lost
        dropped = self.cache.keep_partitions(self._owned)
        if self.publisher is not None:
            self.publisher.forget()
        log.info(
            "partitions revoked: states written, cache dropped",
            extra={"partitions": sorted(lost), "written": written, "forgotten": dropped},
        )

    async def _on_assigned(self, app: Any, assigned: set[Any], **_: Any) -> None:
        partitions = {tp.partition for tp in assigned if tp.topic == self.settings.topics.runs}
        self._owned = set(partitions)
        self._dlq_marks.clear()  # re-read on first need: another worker may have added some
        self._dlq_loaded.clear()
        # Keep the next offset of partitions this worker still owns: it processed up to
        # there, maybe past the last commit (faust does not commit on rebalance), so the
        # committed offset would make those records look skipped. Others start from the
        # committed offset faust fetches for newly assigned partitions.
        owned = {(tp.topic, tp.partition) for tp in assigned}
        for key in [k for k in self._expected if k not in owned]:
            del self._expected[key]
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

    def _owned_partitions(self) -> set[int]:
        return self._owned

    def _guard_commits(self) -> None:
        """Commit offsets only after the changelog holds every state written before.

        Wraps the consumer's offset commit (at_least_once) and the transaction commit
        (exactly_once): both first wait until every changelog record sent so far (the
        states written by `CommitHook` at the start of this commit) is acknowledged. If one
        failed, the commit fails: the runs will be replayed rather than lost.
        """
        consumer = self.app.consumer
        table = self.table

        plain_commit = consumer._commit

        async def commit_after_changelog(offsets: Any) -> bool:
            waited = await table.wait_changelog()
            log.debug("changelog acknowledged before commit", extra={"records": waited})
            return await plain_commit(offsets)

        consumer._commit = commit_after_changelog
        transactions = getattr(consumer, "transactions", None)
        if transactions is not None:
            transaction_commit = transactions.commit

            async def commit_transaction_after_changelog(
                offsets: Any, start_new_transaction: bool = True
            ) -> bool:
                await self.app.producer.flush()
                await table.wait_changelog()
                return await transaction_commit(
                    offsets, start_new_transaction=start_new_transaction
                )

            transactions.commit = commit_transaction_after_changelog

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
        self._guard_commits()
        self.producer = AIOKafkaProducer(
            **aiokafka_kwargs(s), acks="all", enable_idempotence=True, linger_ms=5
        )
        await self.producer.start()
        dlq_partitions = await self.producer.partitions_for(s.topics.dlq)
        self._dlq_aligned = len(dlq_partitions) == self.partitions
        if not self._dlq_aligned:
            log.warning(
                "DLQ topic has %d partitions, %s has %d: a record replayed after a crash can "
                "reach the DLQ twice",
                len(dlq_partitions),
                s.topics.runs,
                self.partitions,
            )
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
