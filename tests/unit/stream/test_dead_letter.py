"""Dead letters and rekeyed runs are sent without waiting for each delivery; the commit
waits for them all; a record too large for the DLQ is kept as a prefix (no broker)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from worker.observability.metrics import WorkerMetrics
from worker.stream.dead_letter import DeadLetters, fitted
from worker.stream.pending_sends import SEND_DELAY_S, PendingSends


@dataclass
class Message:
    offset: int
    value: bytes | None = b"{bad"
    topic: str = "runs"
    partition: int = 0
    key: bytes | None = b"agent"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Producer:
    """Records each batch handed over; deliveries complete only when the test says so, and
    handing a batch over waits while `hold` is set."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, BatchBuilder]] = []
        self.deliveries: list[asyncio.Future[None]] = []
        self.hold: asyncio.Event | None = None

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(200, 0)  # small: a few records fill it (0: no compression)

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        if self.hold is not None:
            await self.hold.wait()
        self.batches.append((topic, partition, batch))
        delivery = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery

    def records(self, partition: int | None = None) -> list[tuple[bytes | None, dict[str, bytes]]]:
        """(value, headers) of every record handed over (to `partition`), in order."""
        out = []
        for _, p, batch in self.batches:
            if partition is None or p == partition:
                for record in DefaultRecordBatch(bytearray(batch._build())):
                    out.append((record.value, dict(record.headers)))
        return out

    def deliver(self) -> None:
        for delivery in self.deliveries:
            if not delivery.done():
                delivery.set_result(None)


def dead_letters(sends: PendingSends, limit: int = 1 << 20) -> DeadLetters:
    return DeadLetters(sends, "dlq", 4, {"runs"}, False, limit, {}, WorkerMetrics())


async def test_rejects_are_queued_without_waiting_and_the_commit_waits() -> None:
    producer = Producer()
    sends = PendingSends(producer)
    dlq = dead_letters(sends)
    for offset in range(5):
        await dlq.send(Message(offset, value=b"{bad %d" % offset), "invalid_json", "bad")
    assert len(sends) == 5 and producer.batches == []  # queued, not even handed over yet
    waiting = asyncio.create_task(sends.wait())
    for _ in range(5):
        await asyncio.sleep(0)
    assert producer.batches and not waiting.done()  # a commit now would wait ...
    producer.deliver()
    assert await waiting == 5  # ... until every record is acknowledged
    assert len(sends) == 0
    records = producer.records()
    assert [value for value, _ in records] == [b"{bad %d" % i for i in range(5)]  # in order
    assert [h["source.offset"] for _, h in records] == [b"%d" % i for i in range(5)]
    assert len(producer.batches) > 1  # several batches (each holds a few): order across them


async def test_batches_collect_records_for_a_moment_then_leave_together() -> None:
    producer = Producer()
    sends = PendingSends(producer)
    await sends.send("rekey", 2, b"agent", b"run", [])
    await asyncio.sleep(SEND_DELAY_S / 2)
    assert producer.batches == []  # the caller kept going: nothing awaited per record
    await sends.send("rekey", 2, b"agent", b"run 2", [])
    await sends.send("dlq", 0, b"agent", b"bad", [])
    await asyncio.sleep(SEND_DELAY_S)
    assert [(topic, partition) for topic, partition, _ in producer.batches] == [
        ("rekey", 2),
        ("dlq", 0),
    ]
    assert [value for value, _ in producer.records(2)] == [b"run", b"run 2"]


async def test_a_record_larger_than_a_batch_gets_one_of_its_own() -> None:
    producer = Producer()  # batches of 200 bytes
    sends = PendingSends(producer)
    for value in (b"small", b"x" * 5000, b"after"):
        await sends.send("dlq", 0, None, value, [])
    waiting = asyncio.create_task(sends.wait())
    while not waiting.done():
        producer.deliver()
        await asyncio.sleep(0)
    assert await waiting == 3
    assert [value for value, _ in producer.records()] == [b"small", b"x" * 5000, b"after"]
    assert [batch.record_count() for _, _, batch in producer.batches] == [1, 1, 1]


async def test_each_partition_keeps_its_order_while_a_batch_is_held() -> None:
    producer = Producer()
    producer.hold = asyncio.Event()
    sends = PendingSends(producer)
    dlq = dead_letters(sends)
    for offset in range(3):
        await dlq.send(Message(offset, partition=offset % 2), "schema", "x")
    await asyncio.sleep(0)  # the sender takes the first batch and is held
    for offset in range(3, 30):
        await dlq.send(Message(offset, partition=offset % 2), "schema", "x")
    producer.hold.set()
    waiting = asyncio.create_task(sends.wait())
    while not waiting.done():
        producer.deliver()
        await asyncio.sleep(0)
    assert await waiting == 30
    for partition in (0, 1):
        offsets = [int(h["source.offset"]) for _, h in producer.records(partition)]
        assert offsets == list(range(partition, 30, 2))


async def test_a_failed_delivery_fails_this_commit_and_every_later_one() -> None:
    producer = Producer()
    sends = PendingSends(producer)
    await dead_letters(sends).send(Message(1), "schema", "x")
    waiting = asyncio.create_task(sends.wait())
    while not producer.deliveries:
        await asyncio.sleep(0)
    producer.deliveries[0].set_exception(RuntimeError("broker gone"))
    with pytest.raises(RuntimeError, match="broker gone"):
        await waiting
    with pytest.raises(RuntimeError, match="broker gone"):  # the record is lost for good
        await sends.wait()
    await sends.send("dlq", 0, None, b"later", [])  # not queued: it will be read again
    assert [value for value, _ in producer.records()] == [b"{bad"]


async def test_a_batch_the_producer_refuses_fails_the_commit() -> None:
    producer = Producer()

    async def closed(*_: Any, **__: Any) -> None:
        raise RuntimeError("producer closed")

    producer.send_batch = closed  # type: ignore[method-assign,assignment]
    sends = PendingSends(producer)
    await sends.send("dlq", 0, None, b"x", [])
    with pytest.raises(RuntimeError, match="producer closed"):
        await sends.wait()


async def test_pending_records_are_bounded() -> None:
    producer = Producer()
    sends = PendingSends(producer, limit=2)
    await sends.send("dlq", 0, None, b"1", [])
    await sends.send("dlq", 0, None, b"2", [])
    adding = asyncio.create_task(sends.send("dlq", 0, None, b"3", []))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not adding.done()  # over the limit: waits for the oldest delivery
    producer.deliver()
    await adding
    assert len(sends) <= 2


def test_a_record_that_fits_is_unchanged() -> None:
    headers = [("error.reason", b"schema")]
    assert fitted(b"k", b"v" * 100, headers, 10_000) == (b"v" * 100, headers)


def test_a_record_too_large_keeps_a_prefix_and_says_so() -> None:
    value = bytes(range(256)) * 8_000  # 2 MB
    headers = [("error.reason", b"too_large")]
    kept, kept_headers = fitted(b"agent", value, headers, 1_048_588)
    names = dict(kept_headers)
    assert names["dlq.truncated"] == b"true"
    assert names["dlq.original_size"] == str(len(value)).encode()
    assert names["dlq.original_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert kept is not None and value.startswith(kept) and len(kept) > 1_040_000
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(b"agent", kept, kept_headers)
    assert size <= 1_048_588
