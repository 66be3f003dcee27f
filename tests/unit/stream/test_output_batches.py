"""Output records batched per partition: placed as Kafka's default partitioner places keyed
records, full batches leave at once, a failed batch fails its own records only (aiokafka's
real batch builder, no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from worker.stream.output_batches import OutputBatches


class Producer:
    """Real batch builders of `batch_bytes`; send_batch records what went where."""

    def __init__(self, batch_bytes: int, failing_partition: int | None = None) -> None:
        self.batch_bytes = batch_bytes
        self.failing_partition = failing_partition
        self.batches: list[tuple[str, int, int]] = []  # topic, partition, records

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_bytes, 0)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        done = asyncio.get_running_loop().create_future()
        self.batches.append((topic, partition, batch.record_count()))
        if partition == self.failing_partition:
            done.set_exception(RuntimeError("partition offline"))
        else:
            done.set_result(None)
        return done


async def three(topic: str) -> int:
    return 3


async def test_records_go_where_the_default_partitioner_puts_their_key() -> None:
    producer = Producer(batch_bytes=1 << 20)
    batches: OutputBatches[str] = OutputBatches(producer, three)
    agents = [f"agent-{i:04d}" for i in range(30)]
    for agent in agents:
        await batches.add("hints", agent.encode(), b"{}", agent)
    outcomes = await batches.send()
    expected: dict[int, set[str]] = {}
    for agent in agents:
        partition = DefaultPartitioner()(agent.encode(), [0, 1, 2], [0, 1, 2])
        expected.setdefault(partition, set()).add(agent)
    assert {p: n for _, p, n in producer.batches} == {p: len(a) for p, a in expected.items()}
    assert sorted(map(sorted, (owners for owners, _ in outcomes))) == sorted(
        map(sorted, expected.values())
    )
    assert all(error is None for _, error in outcomes)


async def test_a_full_batch_leaves_and_the_next_record_opens_another() -> None:
    producer = Producer(batch_bytes=400)
    batches: OutputBatches[int] = OutputBatches(producer, lambda topic: _one())
    for i in range(10):
        await batches.add("tries", b"same-agent", b"x" * 150, i)
    assert len(producer.batches) >= 3  # the full ones left before `send`
    outcomes = await batches.send()
    assert sum(n for _, _, n in producer.batches) == 10
    assert sorted(i for owners, _ in outcomes for i in owners) == list(range(10))


async def test_a_failed_batch_fails_only_its_own_records() -> None:
    partition_of = {
        agent: DefaultPartitioner()(agent.encode(), [0, 1, 2], [0, 1, 2])
        for agent in (f"a{i}" for i in range(20))
    }
    producer = Producer(batch_bytes=1 << 20, failing_partition=1)
    batches: OutputBatches[str] = OutputBatches(producer, three)
    for agent in partition_of:
        await batches.add("hints", agent.encode(), b"{}", agent)
    failed = {a for owners, error in await batches.send() if error is not None for a in owners}
    assert failed == {a for a, p in partition_of.items() if p == 1} != set()


async def _one() -> int:
    return 1
