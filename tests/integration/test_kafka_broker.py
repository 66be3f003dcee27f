"""Acceptance tests for the development broker: what the worker relies on, against real Kafka.

Each wait is bounded and says what it was waiting for when it gives up.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from devtools.kafka_broker import TopicSpec

pytestmark = pytest.mark.integration

WAIT = 30.0  # seconds any single condition may take before the test fails


async def wait_for(
    condition: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT, every: float = 0.2
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail saying ``what`` if it doesn't."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


async def consume_all(consumer: AIOKafkaConsumer, count: int, timeout: float = WAIT) -> list:
    """Exactly ``count`` records, or fail after ``timeout`` showing what did arrive."""
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=500)
        for batch in batches.values():
            records.extend(batch)
    assert len(records) == count, f"expected {count} records, got {len(records)}: {records!r}"
    return records


async def read_from_start(bootstrap: str, topic: str, **config: Any) -> list:
    """Every record currently in ``topic`` (no consumer group), up to the end offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **config,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list = []
        deadline = time.monotonic() + WAIT
        while any([await consumer.position(tp) < end[tp] for tp in partitions]):
            assert time.monotonic() < deadline, f"could not read {topic} up to {end}"
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_produce_and_consume_with_keys_and_headers(kafka_broker) -> None:
    topic = unique("kv")
    await kafka_broker.create_topics(TopicSpec(topic, partitions=3))
    sent = [
        (f"key-{i % 4}".encode(), f"value-{i}".encode(), [("trace", f"t{i}".encode()), ("n", b"")])
        for i in range(20)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    await producer.start()
    try:
        metadata = [
            await producer.send_and_wait(topic, value, key=key, headers=headers)
            for key, value, headers in sent
        ]
    finally:
        await producer.stop()
    # The default partitioner keeps one key on one partition.
    by_key = {}
    for (key, _, _), meta in zip(sent, metadata, strict=True):
        assert by_key.setdefault(key, meta.partition) == meta.partition

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=unique("g"),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        records = await consume_all(consumer, len(sent))
    finally:
        await consumer.stop()
    got = sorted(((r.key, r.value, list(r.headers)) for r in records), key=lambda r: int(r[1][6:]))
    assert got == sent
    # Order is kept per partition.
    for partition in {r.partition for r in records}:
        values = [int(r.value[6:]) for r in records if r.partition == partition]
        assert values == sorted(values)


async def test_compacted_topic_really_compacts(kafka_broker) -> None:
    topic = unique("compact")
    await kafka_broker.create_topics(
        TopicSpec(
            topic,
            config={
                "cleanup.policy": "compact",
                "segment.ms": "100",  # roll the active segment quickly: it is never cleaned
                "min.cleanable.dirty.ratio": "0.01",
                "min.compaction.lag.ms": "0",
                "delete.retention.ms": "100",
                "file.delete.delay.ms": "100",
            },
        )
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, linger_ms=0)
    await producer.start()
    try:
        written = {}  # offset -> (key, value), as acknowledged by the broker
        for version in range(5):
            for key in range(10):
                k, v = f"k{key}".encode(), f"v{version}".encode()
                written[(await producer.send_and_wait(topic, v, key=k)).offset] = (k, v)
        assert sorted(written) == list(range(50))

        async def compacted() -> Any:
            # A new record after segment.ms rolls the segment holding the old values, which
            # makes it eligible for the cleaner (the active segment is never cleaned).
            await producer.send_and_wait(topic, b"tick", key=b"tick")
            records = await read_from_start(kafka_broker.bootstrap, topic)
            keys = [r.key for r in records if r.key != b"tick"]
            return len(keys) == len(set(keys)) and records

        records = await wait_for(compacted, "the log cleaner to drop old values", timeout=60)
    finally:
        await producer.stop()
    kept = {r.offset: (r.key, r.value) for r in records if r.key != b"tick"}
    # Exactly the latest value of each key survives, at its original offset; the 40 older
    # values, acknowledged at offsets 0..39, are gone.
    assert kept == {offset: written[offset] for offset in range(40, 50)}
    assert {key: value for key, value in kept.values()} == {
        f"k{key}".encode(): b"v4" for key in range(10)
    }


async def test_consumer_group_splits_partitions_and_rebalances(kafka_broker) -> None:
    topic = unique("group")
    group = unique("g")
    await kafka_broker.create_topics(TopicSpec(topic, partitions=4))
    everything = {TopicPartition(topic, p) for p in range(4)}

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
            max_poll_interval_ms=60000,
        )

    first, second = member(), member()
    pollers: list[asyncio.Task] = []

    async def poll(consumer: AIOKafkaConsumer) -> None:
        while True:
            await consumer.getmany(timeout_ms=200)

    await first.start()
    try:
        pollers.append(asyncio.create_task(poll(first)))

        async def first_alone() -> bool:
            return first.assignment() == everything

        await wait_for(first_alone, "the only member to get all 4 partitions")

        await second.start()
        pollers.append(asyncio.create_task(poll(second)))

        async def split() -> Any:
            a, b = first.assignment(), second.assignment()
            return a and b and not (a & b) and a | b == everything and (a, b)

        a, b = await wait_for(split, "two members to split the 4 partitions")
        assert len(a) == len(b) == 2, f"uneven split: {a} / {b}"

        pollers.pop().cancel()
        await second.stop()  # leaves the group: the other member takes everything back

        await wait_for(first_alone, "the remaining member to get all 4 partitions back")
    finally:
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        await first.stop()
        await second.stop()


async def test_transactions_commit_and_abort_for_read_committed(kafka_broker) -> None:
    topic = unique("txn")
    await kafka_broker.create_topics(TopicSpec(topic, partitions=2))
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap, transactional_id=unique("tx")
    )
    await producer.start()
    try:
        async with producer.transaction():
            for i in range(3):
                await producer.send(topic, f"committed-{i}".encode(), key=b"a")
        await producer.begin_transaction()
        for i in range(3):
            await producer.send(topic, f"aborted-{i}".encode(), key=b"a")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"committed-3", key=b"a")
    finally:
        await producer.stop()

    committed = await read_from_start(
        kafka_broker.bootstrap, topic, isolation_level="read_committed"
    )
    assert [r.value for r in committed] == [f"committed-{i}".encode() for i in range(4)]
    # The aborted records were really written: a read_uncommitted reader sees them.
    everything = await read_from_start(
        kafka_broker.bootstrap, topic, isolation_level="read_uncommitted"
    )
    assert [r.value for r in everything] == [
        b"committed-0",
        b"committed-1",
        b"committed-2",
        b"aborted-0",
        b"aborted-1",
        b"aborted-2",
        b"committed-3",
    ]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_login_with_right_password(kafka_broker, mechanism: str) -> None:
    topic = unique("sasl")
    await kafka_broker.create_topics(TopicSpec(topic))
    sasl = kafka_broker.sasl_client_config(mechanism)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.sasl_bootstrap, **sasl)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over SASL", key=b"k")
    finally:
        await producer.stop()
    records = await read_from_start(kafka_broker.sasl_bootstrap, topic, **sasl)
    assert [r.value for r in records] == [b"over SASL"]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_login_with_wrong_password_fails(kafka_broker, mechanism: str) -> None:
    host, port = kafka_broker.sasl_bootstrap.split(":")
    right = kafka_broker.sasl_client_config(mechanism)
    wrong = right | {"sasl_plain_password": "not-" + kafka_broker.scram_password}

    # On one connection the broker's answer is explicit: the credentials are invalid ...
    conn = await create_conn(host, int(port), request_timeout_ms=10000, **right)
    conn.close()
    with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
        await create_conn(host, int(port), request_timeout_ms=10000, **wrong)
    with pytest.raises(SaslAuthenticationFailed):
        await create_conn(
            host, int(port), request_timeout_ms=10000, **right | {"sasl_plain_username": "nobody"}
        )

    # ... and a client built with the wrong password cannot start at all.
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_broker.sasl_bootstrap, request_timeout_ms=10000, **wrong
    )
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(producer.start(), WAIT)
    await producer.stop()


async def test_faust_app_processes_records_with_a_table(kafka_broker, tmp_path) -> None:
    """faust-streaming (on aiokafka) against this broker version: agent, table, changelog."""
    import faust

    app_id = unique("faust-smoke")
    source = unique("faust-in")
    # auto.create.topics.enable=false: source topics exist before the worker starts, as in
    # production; faust itself creates its internal topics (leader, table changelogs).
    await kafka_broker.create_topics(TopicSpec(source, partitions=2))
    app = faust.App(
        app_id,
        broker=f"kafka://{kafka_broker.bootstrap}",
        store="memory://",
        web_enabled=False,
        datadir=str(tmp_path),
        topic_partitions=2,
    )
    topic = app.topic(source, key_type=str, value_type=str, partitions=2)
    counts = app.Table("counts", default=int, partitions=2)
    seen: list[tuple[str, str]] = []

    @app.agent(topic)
    async def count(stream):
        async for key, value in stream.items():
            counts[key] += 1
            seen.append((key, value))

    await asyncio.wait_for(app.start(), WAIT)
    try:
        for i in range(9):
            await topic.send(key=f"k{i % 3}", value=f"v{i}")

        async def all_seen() -> bool:
            return len(seen) >= 9

        await wait_for(all_seen, "the faust agent to process 9 records")
        assert dict(counts.items()) == {"k0": 3, "k1": 3, "k2": 3}
    finally:
        await asyncio.wait_for(app.stop(), WAIT)

    changelog = f"{app_id}-counts-changelog"
    records = await read_from_start(kafka_broker.bootstrap, changelog)
    assert len(records) == 9, "every table update goes to the changelog"


async def test_broker_restart_keeps_data_and_address(kafka_broker) -> None:
    """stop()/start() restart the same broker (for fault tests): same port, same data."""
    topic = unique("restart")
    await kafka_broker.create_topics(TopicSpec(topic, partitions=2))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", key=b"k")
        bootstrap, pid = kafka_broker.bootstrap, kafka_broker.pid
        await asyncio.to_thread(kafka_broker.stop)
        assert not kafka_broker.is_running()
        await asyncio.to_thread(kafka_broker.start)
        assert kafka_broker.bootstrap == bootstrap and kafka_broker.pid != pid
        # The same client reconnects to the restarted broker.
        await asyncio.wait_for(producer.send_and_wait(topic, b"after", key=b"k"), WAIT)
    finally:
        await producer.stop()
    records = await read_from_start(kafka_broker.bootstrap, topic)
    assert [r.value for r in records] == [b"before", b"after"]
