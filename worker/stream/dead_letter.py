"""The dead-letter topic: each rejected record once, with the reason, also after a crash.

DLQ records go to the DLQ partition numbered like their source partition, in source order
(one producer, ordered per partition). So the last DLQ record from a source partition tells
how far that partition was dead-lettered: a record replayed after a crash at or below that
mark is not sent again. The marks of assigned partitions are read in the background as soon
as they are assigned, so the first reject after a restart does not stall the partitions.

A DLQ record always fits the DLQ topic: a record larger than the topic accepts keeps a
prefix of its bytes, and headers say so (`dlq.truncated`, `dlq.original_size`,
`dlq.original_sha256`; `source.*` locate the full record on the input topic while its
retention keeps it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.observability.metrics import WorkerMetrics
from worker.stream.pending_sends import PendingSends

log = logging.getLogger(__name__)

#: how far back (records) a DLQ partition is searched for what was already dead-lettered
SCAN_LIMIT = 100_000
#: room left in a DLQ record for what the size estimate may not see
SIZE_MARGIN = 512
DETAIL_BYTES = 4000
#: rejects are logged at most this often, each line with how many were not logged since
#: (a stream of bad records must not become a stream of log lines: the metrics count every
#: reject by reason, and the DLQ keeps each record with its reason)
LOG_EVERY_S = 1.0

Source = tuple[str, int]
Headers = list[tuple[str, bytes]]


def where(message: Any) -> str:
    """`topic[partition]@offset` of a consumed record, for logs."""
    return f"{message.topic}[{message.partition}]@{message.offset}"


def fitted(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, Headers]:
    """`value` and `headers` as a record of at most `limit` bytes: unchanged when they fit,
    else a prefix of `value` with headers naming the original size and SHA-256."""
    if DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) <= limit:
        return value, headers
    value = value or b""
    headers = [
        *headers,
        ("dlq.truncated", b"true"),
        ("dlq.original_size", str(len(value)).encode()),
        ("dlq.original_sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    room = limit - SIZE_MARGIN - DefaultRecordBatchBuilder.estimate_size_in_bytes(key, b"", headers)
    return value[: max(room, 0)], headers


class DeadLetters:
    """Sends rejected records to the DLQ topic, once per source offset, without waiting."""

    def __init__(
        self,
        sends: PendingSends,
        topic: str,
        partitions: int,
        source_topics: set[str],
        aligned: bool,
        record_limit: int,
        client_kwargs: dict[str, Any],
        metrics: WorkerMetrics,
    ) -> None:
        self.sends = sends
        self.topic = topic
        self.partitions = partitions  # of the DLQ topic
        self.source_topics = source_topics
        #: DLQ partition i gets the rejects of source partition i (the counts match)
        self.aligned = aligned
        self.record_limit = record_limit
        self.client_kwargs = client_kwargs
        self.metrics = metrics
        self._marks: dict[Source, int] = {}
        self._loading: dict[int, asyncio.Task[dict[Source, int]]] = {}
        self._loaded: set[int] = set()
        self._logged_at = -LOG_EVERY_S
        self._not_logged = 0

    def assigned(self, partitions: Iterable[int]) -> None:
        """Partitions assigned (again): start reading their marks; another worker may have
        added DLQ records since they were last read."""
        for task in self._loading.values():
            task.cancel()
        self._marks.clear()
        self._loading = {}
        self._loaded.clear()
        if self.aligned:
            for partition in partitions:
                self._loading[partition] = asyncio.create_task(
                    self._read_marks(partition), name=f"dlq-marks-{partition}"
                )

    async def send(self, message: Any, reason: str | None, detail: str | None) -> None:
        """Queue `message` for the DLQ with its reason, unless it is there already."""
        source = (message.topic, message.partition)
        mark = await self._mark(source)
        if mark is not None and message.offset <= mark:
            self.metrics.dlq_skipped.inc()
            log.info("record already in the DLQ, not sent again", extra={"source": where(message)})
            return
        headers: Headers = list(message.headers or [])
        headers += [
            ("error.reason", (reason or "unknown").encode()),
            ("error.detail", (detail or "").encode()[:DETAIL_BYTES]),
            ("source.topic", message.topic.encode()),
            ("source.partition", str(message.partition).encode()),
            ("source.offset", str(message.offset).encode()),
        ]
        value, headers = fitted(message.key, message.value, headers, self.record_limit)
        if headers[-1][0] == "dlq.original_sha256":
            self.metrics.dlq_truncated.inc()
        # aligned: the same partition number; else still one DLQ partition per source one
        partition = message.partition % self.partitions
        await self.sends.send(self.topic, partition, message.key, value, headers)
        if self.aligned:
            self._marks[source] = message.offset
        self.metrics.rejected.labels(reason or "unknown").inc()
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            self._not_logged += 1
            return
        log.warning(
            "rejected record to DLQ",
            extra={
                "reason": reason,
                "detail": detail,
                "source": where(message),
                "rejects_not_logged_since": self._not_logged,
            },
        )
        self._logged_at, self._not_logged = now, 0

    async def _mark(self, source: Source) -> int | None:
        """Highest offset of `source` (topic, partition) already in the DLQ (None: none)."""
        if not self.aligned:
            return None
        partition = source[1]
        if partition not in self._loaded:
            loading = self._loading.get(partition)
            if loading is None:  # not announced by an assignment: read it now
                loading = self._loading[partition] = asyncio.create_task(
                    self._read_marks(partition)
                )
            for key, offset in (await asyncio.shield(loading)).items():
                self._marks[key] = max(offset, self._marks.get(key, -1))
            self._loaded.add(partition)
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
