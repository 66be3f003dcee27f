"""The output producer keeps every output topic in its metadata (`service.track_topics`).

Without it, aiokafka's producer forgets the topics it knew from its bootstrap on its first
send to a topic created after it started (the state changelog): a hints batch queued then
waited 40 s for a leader and left the idempotent producer failing every later batch (seen
in CI as a 10,000-agent test that never got its hints).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from devtools.kafka_broker import KafkaBroker, TopicSpec
from worker.stream.service import track_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4


def leaders_known(producer: AIOKafkaProducer, topic: str) -> bool:
    """Whether the producer's sender finds a leader for every partition of `topic`."""
    cluster = producer.client.cluster
    return all(
        cluster.leader_for_partition(TopicPartition(topic, p)) not in (None, -1)
        for p in range(PARTITIONS)
    )


async def first_send_to_a_new_topic(broker: KafkaBroker, track: bool) -> bool:
    """Start an idempotent producer while `hints` exists, (maybe) track it, then send to a
    topic created after the start; whether the producer still knows `hints`' leaders."""
    hints, changelog = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("hints", "changelog"))
    await broker.create_topics(TopicSpec(hints, PARTITIONS))
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        for _ in range(50):  # known from a fetch of every topic, as at the bootstrap
            if leaders_known(producer, hints):
                break
            await producer.client.force_metadata_update()
            await asyncio.sleep(0.1)
        assert leaders_known(producer, hints) and not producer.client._topics
        if track:
            await track_topics(producer, (hints,))
        await broker.create_topics(TopicSpec(changelog, PARTITIONS))
        batch = producer.create_batch()
        batch.append(timestamp=None, key=b"agent", value=b"{}", headers=[])
        await (await producer.send_batch(batch, changelog, partition=0))
        known = leaders_known(producer, hints)
        if known:  # and a hints batch goes out at once
            await producer.send_and_wait(hints, b"{}", key=b"agent", partition=1)
        return known
    finally:
        await producer.stop()


async def test_tracked_outputs_keep_their_leaders_after_a_send_to_a_new_topic(
    kafka_broker: KafkaBroker,
) -> None:
    assert await first_send_to_a_new_topic(kafka_broker, track=True)


async def test_untracked_topics_drop_out_of_aiokafkas_metadata(kafka_broker: KafkaBroker) -> None:
    """The hazard itself, so that this test says when aiokafka no longer needs the tracking."""
    assert not await first_send_to_a_new_topic(kafka_broker, track=False)
