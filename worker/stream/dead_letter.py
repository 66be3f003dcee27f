"""The dead-letter topic: each rejected record once, with the reason, also after a crash.

DLQ records go to the DLQ partition numbered like their source partition, sent one at a time
in source order. So the last DLQ record from a source partition tells how far that partition
was dead-lettered: a record replayed after a crash at or below that mark is not sent again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.observability.metrics import WorkerMetrics

log = logging.getLogger(__name__)

#: how far back (records) a DLQ partition is searched for what was already dead-lettered
SCAN_LIMIT = 100_000

Source = tuple[str, int]


def where(message: Any) -> str:
    """`topic[partition]@offset` of a consumed record, for logs."""
    return f"{message.topic}[{message.partition}]@{message.offset}"


class DeadLetters:
    """Sends rejected records to the DLQ topic, once per source offset."""

    def __init__(
        self,
        producer: Any,
        topic: str,
        source_topics: set[str],
        aligned: bool,
        client_kwargs: dict[str, Any],
        metrics: WorkerMetrics,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.source_topics = source_topics
        #: DLQ partition i gets the rejects of source partition i (the counts match)
        self.aligned = aligned
        self.client_kwargs = client_kwargs
        self.metrics = metrics
        self._marks: dict[Source, int] = {}
        self._loaded: set[int] = set()

    def forget_marks(self) -> None:
        """After a rebalance: another worker may have added records; re-read on first need."""
        self._marks.clear()
        self._loaded.clear()

    async def send(self, message: Any, reason: str | None, detail: str | None) -> None:
        """Send `message` to the DLQ with its reason, unless it is there already."""
        source = (message.topic, message.partition)
        mark = await self._mark(source)
        if mark is not None and message.offset <= mark:
            self.metrics.dlq_skipped.inc()
            log.info("record already in the DLQ, not sent again", extra={"source": where(message)})
            return
        headers = list(message.headers or [])
        headers += [
            ("error.reason", (reason or "unknown").encode()),
            ("error.detail", (detail or "").encode()[:4000]),
            ("source.topic", message.topic.encode()),
            ("source.partition", str(message.partition).encode()),
            ("source.offset", str(message.offset).encode()),
        ]
        await self.producer.send_and_wait(
            self.topic,
            message.value,
            key=message.key,
            headers=headers,
            partition=message.partition if self.aligned else None,
        )
        if self.aligned:
            self._marks[source] = message.offset
        self.metrics.rejected.labels(reason or "unknown").inc()
        log.warning(
            "rejected record to DLQ",
            extra={"reason": reason, "detail": detail, "source": where(message)},
        )

    async def _mark(self, source: Source) -> int | None:
        """Highest offset of `source` (topic, partition) already in the DLQ (None: none)."""
        if not self.aligned:
            return None
        if source[1] not in self._loaded:
            self._marks.update(await self._read_marks(source[1]))
            self._loaded.add(source[1])
        return self._marks.get(source)

    async def _read_marks(self, partition: int) -> dict[Source, int]:
        """Read DLQ partition `partition` backwards until the last record of each source."""
        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(**self.client_kwargs, enable_auto_commit=False, group_id=None)
        await consumer.start()
        marks: dict[Source, int] = {}
        try:
            consumer.assign([tp])
            begin = (await consumer.beginning_offsets([tp]))[tp]
            high = (await consumer.end_offsets([tp]))[tp]
            floor = max(begin, high - SCAN_LIMIT)
            while high > floor and len(marks) < len(self.source_topics):
                low = max(floor, high - 1000)
                consumer.seek(tp, low)
                records = []
                deadline = time.monotonic() + 60
                while await consumer.position(tp) < high:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"reading {self.topic}[{partition}] timed out")
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    records += [r for r in batch.get(tp, ()) if r.offset < high]
                for record in reversed(records):
                    h = dict(record.headers or ())
                    try:
                        topic = h["source.topic"].decode()
                        key = (topic, int(h["source.partition"]))
                        offset = int(h["source.offset"])
                    except (KeyError, ValueError, UnicodeDecodeError):
                        continue
                    if key[1] == partition and topic in self.source_topics:
                        marks.setdefault(key, offset)
                high = low
        finally:
            await consumer.stop()
        log.info("DLQ marks read", extra={"partition": partition, "marks": marks})
        return marks
