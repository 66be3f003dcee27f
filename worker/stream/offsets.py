"""The next offset of every source partition, and the guard against skipped records.

One map, `next_offset[(topic, partition)]`, is what the record loop advances, what the lag
gauge subtracts from the high watermark, and what the gap guard compares each record with.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.errors import ExitCode
from worker.stream.faust_internals import committed_offset

log = logging.getLogger(__name__)

Key = tuple[str, int]


class Offsets:
    """Next offsets per (topic, partition) of the source topics, and the gap guard."""

    def __init__(self, client_kwargs: dict[str, Any]) -> None:
        self.client_kwargs = client_kwargs
        self.next_offset: dict[Key, int] = {}

    def positions(self) -> dict[Key, int]:
        """The next offset of every source partition processed so far (a copy): every record
        before them has been processed."""
        return dict(self.next_offset)

    def keep(self, owned: Iterable[Key]) -> None:
        """After an assignment: forget partitions no longer owned.

        Partitions this worker keeps retain their next offset: it processed up to there,
        maybe past the last commit (faust does not commit on rebalance), so the committed
        offset would make those records look skipped. New ones start from their commit."""
        keep = set(owned)
        for key in [k for k in self.next_offset if k not in keep]:
            del self.next_offset[key]

    async def check_gap(self, message: Any, consumer: Any) -> None:
        """Stop the process rather than let faust commit over records it skipped.

        After a rebalance with a changelog restore (seen after a lost disk), faust/aiokafka can
        hand the agent a record from beyond the next offset of a partition; faust then counts
        the skipped range as done (a "gap") and the next commit goes over it, so those runs
        would never be learned. Every record must follow the one before (or the committed
        offset, after an assignment). On a jump, the range is read from the broker: if it
        holds records, the process exits at once (`ExitCode.RESTART`, no commit, no flush):
        on restart the partition is replayed from its committed offset and nothing is lost.
        A range without records (transaction markers, retention) is accepted.
        """
        key = (message.topic, message.partition)
        offset = message.offset
        expected = self.next_offset.get(key)
        if expected is None:
            expected = committed_offset(consumer, message.tp)
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
                os._exit(ExitCode.RESTART)

    async def _count_records(self, topic: str, partition: int, start: int, end: int) -> int:
        """How many records offsets start..end-1 of topic[partition] hold (a side consumer)."""
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(**self.client_kwargs, enable_auto_commit=False, group_id=None)
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

    def lags(self, consumer: Any, topics: set[str]) -> Iterator[tuple[str, int, int]]:
        """(topic, partition, records not yet processed) of each assigned source partition."""
        for tp in consumer.assignment():
            if tp.topic not in topics:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = self.next_offset.get((tp.topic, tp.partition))
            if position is None:
                position = committed_offset(consumer, tp) or 0
            yield tp.topic, tp.partition, max(0, highwater - position)
