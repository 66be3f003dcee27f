"""Dead letters and rekeyed runs are sent without waiting for each delivery; the commit
waits for them all; a record too large for the DLQ is kept as a prefix (no broker)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.observability.metrics import WorkerMetrics
from worker.stream.dead_letter import DeadLetters, fitted
from worker.stream.in_flight import InFlight


@dataclass
class Message:
    offset: int
    value: bytes | None = b"{bad"
    topic: str = "runs"
    partition: int = 0
    key: bytes | None = b"agent"
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class Producer:
    """Records each send; deliveries complete only when the test says so."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.deliveries: list[asyncio.Future[None]] = []

    async def send(self, topic: str, value: bytes | None, **kwargs: Any) -> asyncio.Future[None]:
        self.sent.append({"topic": topic, "value": value, **kwargs})
        delivery = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery


def dead_letters(producer: Producer, in_flight: InFlight, limit: int = 1 << 20) -> DeadLetters:
    dlq = DeadLetters(producer, "dlq", {"runs"}, False, limit, {}, in_flight, WorkerMetrics())
    return dlq


async def test_rejects_are_queued_without_waiting_and_the_commit_waits() -> None:
    producer, in_flight = Producer(), InFlight()
    dlq = dead_letters(producer, in_flight)
    for offset in range(5):
        await dlq.send(Message(offset), "invalid_json", "bad")  # returns before delivery
    assert len(producer.sent) == 5 and len(in_flight) == 5
    waiting = asyncio.create_task(in_flight.wait())
    await asyncio.sleep(0)
    assert not waiting.done()  # a commit now would wait ...
    for delivery in producer.deliveries:
        delivery.set_result(None)
    assert await waiting == 5  # ... until every record is acknowledged
    assert [s["value"] for s in producer.sent] == [b"{bad"] * 5  # in source order


async def test_a_failed_delivery_fails_the_commit() -> None:
    producer, in_flight = Producer(), InFlight()
    await dead_letters(producer, in_flight).send(Message(1), "schema", "x")
    producer.deliveries[0].set_exception(RuntimeError("broker gone"))
    with pytest.raises(RuntimeError, match="broker gone"):
        await in_flight.wait()


async def test_in_flight_is_bounded() -> None:
    in_flight = InFlight(limit=2)
    loop = asyncio.get_running_loop()
    first, second, third = (loop.create_future() for _ in range(3))
    await in_flight.add(first)
    await in_flight.add(second)
    adding = asyncio.create_task(in_flight.add(third))
    await asyncio.sleep(0)
    assert not adding.done()  # over the limit: waits for the oldest
    first.set_result(None)
    await adding
    assert len(in_flight) == 2


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
