"""Reading topics without a consumer group: to their end, or following from their end.

Every reader of the output topics uses these (inspect, produce-demo's follower, the
benchmarks and the test harness): assign every partition, read from the beginning up to
the end offsets seen at start, or start at the end and follow. Nothing is committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError


def new_reader(client_kwargs: dict[str, Any], **options: Any) -> AIOKafkaConsumer:
    """A consumer without a group that commits nothing (`options` add to aiokafka's)."""
    return AIOKafkaConsumer(
        **client_kwargs,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )


async def topic_partitions(client_kwargs: dict[str, Any], *topics: str) -> list[TopicPartition]:
    """Every partition of `topics`, from the cluster's metadata; LookupError naming a missing
    topic. (A consumer without a subscription has no public way to learn them.)"""
    admin = AIOKafkaAdminClient(**client_kwargs)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    partitions: list[TopicPartition] = []
    for topic in described:
        if topic.get("error_code", 0) or not topic.get("partitions"):
            raise LookupError(f"topic {topic['topic']!r} does not exist")
        ids = sorted(p["partition"] for p in topic["partitions"])
        partitions += [TopicPartition(topic["topic"], i) for i in ids]
    return partitions


async def assign_at_end(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
    """Assign `partitions` at their current end (resolved now, so records produced from
    here on are all seen)."""
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)


async def read_to_end(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], timeout_s: float = 30.0
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of `partitions` from the beginning to the end offsets seen at the start."""
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    end = await consumer.end_offsets(partitions)
    pending = {tp for tp in partitions if end[tp] > 0}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"reading {partitions[0].topic} to its end took over {timeout_s:.0f} s"
            )
        batches = await consumer.getmany(*pending, timeout_ms=500)
        for tp, records in batches.items():
            for record in records:
                if record.offset < end[tp]:
                    yield record
        for tp in list(pending):
            if await consumer.position(tp) >= end[tp]:
                pending.discard(tp)


async def latest_values(
    client_kwargs: dict[str, Any],
    topic: str,
    keys: set[str] | None = None,
    timeout_s: float = 30.0,
) -> dict[str, bytes]:
    """The latest value per key of a compacted topic (only `keys` when given); a tombstone
    (null value) removes its key. LookupError when the topic does not exist."""
    partitions = await topic_partitions(client_kwargs, topic)
    consumer = new_reader(client_kwargs)
    await consumer.start()
    try:
        latest: dict[str, bytes] = {}
        async for record in read_to_end(consumer, partitions, timeout_s):
            if record.key is None:
                continue
            key = record.key.decode("utf-8", "replace")
            if keys is not None and key not in keys:
                continue
            if record.value is None:
                latest.pop(key, None)
            else:
                latest[key] = record.value
        return latest
    finally:
        await consumer.stop()


async def wait_for_topics(
    client_kwargs: dict[str, Any], *topics: str, timeout_s: float = 30.0
) -> list[TopicPartition]:
    """The partitions of `topics` once they all exist (a worker creating them at start) and
    the broker answers (one restarting refuses connections for a moment; a busy one may not
    have the admin client's connection ready, or answer in time, at the first try)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await topic_partitions(client_kwargs, *topics)
        except (LookupError, KafkaConnectionError, NodeNotReadyError, RequestTimedOutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
