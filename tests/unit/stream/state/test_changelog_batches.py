"""Changelog records batched per partition: each partition's records in order in its own
batches, full batches closed and queued, every batch calling back once with its records,
a send that fails at once a failed future (aiokafka's real batch builder, no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata, TopicPartition

from worker.stream.state.changelog_batches import ChangelogBatches


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


class Delivered:
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[str], int | None]] = []  # partition, owners, offset

    def __call__(self, partition: int, owners: list[str], sent: asyncio.Future[Any]) -> None:
        offset = None if sent.exception() is not None else sent.result().offset
        self.calls.append((partition, owners, offset))


async def test_each_partitions_records_go_in_order_in_one_batch() -> None:
    producer, delivered = Producer(1 << 20), Delivered()
    batches: ChangelogBatches[str] = ChangelogBatches(producer, "changelog", delivered)
    for i in range(9):
        batches.add(i % 3, f"k{i}".encode(), b"v" if i != 4 else None, f"r{i}")
    assert producer.sent == []  # nothing goes before the hand-over
    futures = await batches.hand_over()
    await asyncio.gather(*futures)
    await asyncio.sleep(0)  # the done callbacks
    assert sorted(producer.sent) == [("changelog", p, 3) for p in range(3)]
    assert sorted(delivered.calls) == [
        (0, ["r0", "r3", "r6"], 0),
        (1, ["r1", "r4", "r7"], 0),
        (2, ["r2", "r5", "r8"], 0),
    ]
    assert await batches.hand_over() == []  # all of them went


async def test_a_full_batch_is_closed_and_the_next_one_follows_it() -> None:
    producer, delivered = Producer(400), Delivered()
    batches: ChangelogBatches[str] = ChangelogBatches(producer, "changelog", delivered)
    for i in range(10):
        batches.add(5, b"agent", b"x" * 150, f"r{i}")
    futures = await batches.hand_over()
    await asyncio.gather(*futures)
    await asyncio.sleep(0)
    assert len(producer.sent) >= 3
    owners = [o for _, batch_owners, _ in delivered.calls for o in batch_owners]
    assert owners == [f"r{i}" for i in range(10)]  # in order, across batches
    offsets = [offset for _, _, offset in delivered.calls]
    sizes = [len(batch_owners) for _, batch_owners, _ in delivered.calls]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]  # consecutive


async def test_a_send_that_fails_at_once_fails_its_records() -> None:
    producer, delivered = Producer(1 << 20, refuse=True), Delivered()
    batches: ChangelogBatches[str] = ChangelogBatches(producer, "changelog", delivered)
    batches.add(0, b"a", b"1", "r0")
    batches.add(1, b"b", b"2", "r1")
    futures = await batches.hand_over()
    results = await asyncio.gather(*futures, return_exceptions=True)
    await asyncio.sleep(0)
    assert all(isinstance(r, RuntimeError) for r in results) and len(results) == 2
    assert sorted(delivered.calls) == [(0, ["r0"], None), (1, ["r1"], None)]
