"""Records batched per (topic, partition), as the state changelog sends them: each
partition's records in order in its own batches, full batches closed and queued, every batch
handed over once with its records, a send that fails at once a failed future (aiokafka's
real batch builder, no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata, TopicPartition

from worker.stream.output_batches import PartitionBatches


class Producer:
    """Real batch builders of `batch_bytes`; each partition's log assigns offsets."""

    def __init__(self, batch_bytes: int, refuse: bool = False) -> None:
        self.batch_bytes = batch_bytes
        self.refuse = refuse
        self.sent: list[tuple[str, int, int]] = []  # topic, partition, records
        self.end: dict[int, int] = {}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, 0)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        if self.refuse:
            raise RuntimeError("producer closed")
        count = batch.record_count()
        self.sent.append((topic, partition, count))
        base = self.end.get(partition, 0)
        self.end[partition] = base + count
        done = asyncio.get_running_loop().create_future()
        done.set_result(
            RecordMetadata(topic, partition, TopicPartition(topic, partition), base, -1, 0, 0)
        )
        return done


async def delivered(
    batches: PartitionBatches[str], open_too: bool = True
) -> list[tuple[int, list[str], int | None]]:
    """Hand over and wait: per batch, (partition, its owners, its first offset or None)."""
    handed = await batches.hand_over(open_too)
    await asyncio.gather(*(sent for _, _, sent in handed), return_exceptions=True)
    return [
        (partition, owners, None if sent.exception() is not None else sent.result().offset)
        for (_, partition), owners, sent in handed
    ]


async def test_each_partitions_records_go_in_order_in_one_batch() -> None:
    producer = Producer(1 << 20)
    batches: PartitionBatches[str] = PartitionBatches(producer)
    for i in range(9):
        closed = batches.add(
            ("changelog", i % 3), f"k{i}".encode(), b"v" if i != 4 else None, f"r{i}"
        )
        assert not closed
    assert producer.sent == []  # nothing goes before the hand-over
    done = await delivered(batches)
    assert sorted(producer.sent) == [("changelog", p, 3) for p in range(3)]
    assert sorted(done) == [
        (0, ["r0", "r3", "r6"], 0),
        (1, ["r1", "r4", "r7"], 0),
        (2, ["r2", "r5", "r8"], 0),
    ]
    assert await batches.hand_over() == []  # all of them went


async def test_a_full_batch_is_closed_and_the_next_one_follows_it() -> None:
    producer = Producer(400)
    batches: PartitionBatches[str] = PartitionBatches(producer)
    closed = [batches.add(("changelog", 5), b"agent", b"x" * 150, f"r{i}") for i in range(10)]
    assert closed.count(True) >= 2  # the full ones wait, closed, for the hand-over
    assert producer.sent == []
    full = await delivered(batches, open_too=False)
    assert len(full) == closed.count(True)  # only the closed ones went
    done = full + await delivered(batches)
    assert len(producer.sent) >= 3
    owners = [o for _, batch_owners, _ in done for o in batch_owners]
    assert owners == [f"r{i}" for i in range(10)]  # in order, across batches
    offsets = [offset for _, _, offset in done]
    sizes = [len(batch_owners) for _, batch_owners, _ in done]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]  # consecutive


async def test_a_send_that_fails_at_once_fails_its_records() -> None:
    producer = Producer(1 << 20, refuse=True)
    batches: PartitionBatches[str] = PartitionBatches(producer)
    batches.add(("changelog", 0), b"a", b"1", "r0")
    batches.add(("changelog", 1), b"b", b"2", "r1")
    handed = await batches.hand_over()
    results = await asyncio.gather(*(sent for _, _, sent in handed), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and len(results) == 2
    assert sorted((where[1], owners) for where, owners, _ in handed) == [(0, ["r0"]), (1, ["r1"])]
