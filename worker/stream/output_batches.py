"""Records for the output topics, gathered into one batch per partition before they go.

A `producer.send` per record costs ~30 us of aiokafka's bookkeeping (a future, the
accumulator, the sender's per-record work); a fleet of thousands of agents publishes two
records per agent and commit, which made publishing a sixth of a worker's time. A batch
costs about as much as a few records. Records are keyed by agent id and placed as Kafka's
default partitioner places them (murmur2 of the key), so a reader finds them where a
`send` would have put them. A batch is bounded by the producer's `max_batch_size`, itself
within every output topic's limit, so a record too large for its topic fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from worker.stream.rekey import partition_for

Owner = TypeVar("Owner")


@dataclass
class _Batch(Generic[Owner]):
    builder: Any
    owners: list[Owner] = field(default_factory=list)


class OutputBatches(Generic[Owner]):
    """One cycle's records (hints or tries): `add` them, then `send` waits for them all.

    Each record has an owner (the agent it is for); `send` returns, per batch, its owners
    and the error it failed with (None: delivered)."""

    def __init__(self, producer: Any, partitions: Callable[[str], Awaitable[int]]) -> None:
        self.producer = producer
        self.partitions = partitions
        self._open: dict[tuple[str, int], _Batch[Owner]] = {}
        self._sent: list[tuple[asyncio.Future[Any], list[Owner]]] = []
        self._failed: list[tuple[list[Owner], BaseException]] = []

    async def add(self, topic: str, key: bytes, value: bytes, owner: Owner) -> None:
        """Queue one record; a batch that is full leaves at once."""
        partition = partition_for(key.decode(), await self.partitions(topic))
        where = (topic, partition)
        batch = self._open.get(where)
        if (
            batch is not None
            and batch.builder.append(timestamp=None, key=key, value=value, headers=[]) is not None
        ):
            batch.owners.append(owner)
            return
        if batch is not None:  # full: it goes, the record opens the next one
            await self._hand_over(where, batch)
        builder = self.producer.create_batch()
        builder.append(timestamp=None, key=key, value=value, headers=[])  # any first fits
        self._open[where] = _Batch(builder, [owner])

    async def send(self) -> list[tuple[list[Owner], BaseException | None]]:
        """Hand over the open batches and wait for every delivery."""
        for where, batch in list(self._open.items()):
            await self._hand_over(where, batch)
        self._open = {}
        sent, self._sent = self._sent, []
        results = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
        outcomes: list[tuple[list[Owner], BaseException | None]] = list(self._failed)
        self._failed = []
        for (_, owners), result in zip(sent, results, strict=True):
            outcomes.append((owners, result if isinstance(result, BaseException) else None))
        return outcomes

    async def _hand_over(self, where: tuple[str, int], batch: _Batch[Owner]) -> None:
        del self._open[where]
        batch.builder.close()
        topic, partition = where
        try:
            future = await self.producer.send_batch(batch.builder, topic, partition=partition)
        except Exception as exc:  # a closed producer, a metadata timeout: those owners fail
            self._failed.append((batch.owners, exc))
            return
        self._sent.append((future, batch.owners))
