"""Records gathered into one Kafka batch per (topic, partition) before they go.

A `producer.send` per record costs ~30 us of aiokafka's bookkeeping (a future, the
accumulator, the sender's per-record work); a fleet of thousands of agents publishes two
records per agent and commit, and writes about one state record per run, which made each a
large part of a worker's time. A batch costs about as much as a few records.

`PartitionBatches` is the mechanism (records in order per partition, full batches closed,
handed over together); `OutputBatches` places the hints and tries as Kafka's default
partitioner places keyed records (murmur2 of the key), so a reader finds them where a
`send` would have put them; the state table sends its changelog through `PartitionBatches`
too (`worker.stream.state.table`). A batch is bounded by the producer's `max_batch_size`,
itself within every output topic's limit, so a record too large for its topic fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from worker.stream.rekey import partition_for

Owner = TypeVar("Owner")
#: a (topic, partition)
Where = tuple[str, int]


class PartitionBatches(Generic[Owner]):
    """Open batches by (topic, partition); full ones wait, closed, for the next hand-over.

    Each record has an owner (what it is for); a hand-over returns, per batch, where it
    went, its owners in order and its future (a failed one if the send failed at once)."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self._open: dict[Where, tuple[Any, list[Owner]]] = {}
        self._closed: list[tuple[Where, Any, list[Owner]]] = []

    def add(self, where: Where, key: bytes, value: bytes | None, owner: Owner) -> bool:
        """Queue one record (None: a tombstone) after every record before it; True when it
        closed a full batch."""
        batch = self._open.get(where)
        if batch is not None:
            builder, owners = batch
            if builder.append(timestamp=None, key=key, value=value, headers=[]) is not None:
                owners.append(owner)
                return False
            builder.close()  # full: it goes as it is, the record opens the next one
            self._closed.append((where, builder, owners))
        builder = self.producer.create_batch()
        builder.append(timestamp=None, key=key, value=value, headers=[])  # any first fits
        self._open[where] = (builder, [owner])
        return batch is not None

    async def hand_over(
        self, open_too: bool = True
    ) -> list[tuple[Where, list[Owner], asyncio.Future[Any]]]:
        """Give the closed batches (and with `open_too` the open ones) to the producer, in
        order."""
        if open_too:
            for where, (builder, owners) in self._open.items():
                builder.close()
                self._closed.append((where, builder, owners))
            self._open = {}
        closed, self._closed = self._closed, []
        handed: list[tuple[Where, list[Owner], asyncio.Future[Any]]] = []
        for where, builder, owners in closed:
            topic, partition = where
            try:
                future = await self.producer.send_batch(builder, topic, partition=partition)
            except Exception as exc:  # a closed producer, a metadata timeout
                future = asyncio.get_running_loop().create_future()
                future.set_exception(exc)
            handed.append((where, owners, future))
        return handed


class OutputBatches(Generic[Owner]):
    """One cycle's records (hints or tries): `add` them, then `send` waits for them all.

    Each record has an owner (the agent it is for); `send` returns, per batch, its owners
    and the error it failed with (None: delivered)."""

    def __init__(self, producer: Any, partitions: Callable[[str], Awaitable[int]]) -> None:
        self.partitions = partitions
        self._batches: PartitionBatches[Owner] = PartitionBatches(producer)
        self._sent: list[tuple[list[Owner], asyncio.Future[Any]]] = []

    async def add(self, topic: str, key: bytes, value: bytes, owner: Owner) -> None:
        """Queue one record; a batch that is full leaves at once."""
        partition = partition_for(key.decode(), await self.partitions(topic))
        if self._batches.add((topic, partition), key, value, owner):
            await self._hand_over(open_too=False)

    async def send(self) -> list[tuple[list[Owner], BaseException | None]]:
        """Hand over the open batches and wait for every delivery."""
        await self._hand_over(open_too=True)
        sent, self._sent = self._sent, []
        results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        return [
            (owners, result if isinstance(result, BaseException) else None)
            for (owners, _), result in zip(sent, results, strict=True)
        ]

    async def _hand_over(self, open_too: bool) -> None:
        for _, owners, future in await self._batches.hand_over(open_too):
            self._sent.append((owners, future))
