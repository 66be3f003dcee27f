"""The private faust / aiokafka attributes the worker relies on are still there and still
used the way `worker.stream.faust_internals` and `worker.stream.consumer` assume.

A faust-streaming or aiokafka upgrade that moves one of them must fail here, loudly, rather
than let the worker silently lose a guarantee (offsets committed ahead of the changelog,
skipped records, tiny fetches).
"""

from __future__ import annotations

import asyncio
import inspect
from contextvars import ContextVar

import faust
import faust.streams
from aiokafka import AIOKafkaConsumer
from faust.tables import base as faust_tables
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

from worker.stream import faust_internals


def test_offsets_are_committed_through_consumer_commit() -> None:
    """wrap_offset_commit replaces `_commit`: faust must still commit through it."""
    assert inspect.iscoroutinefunction(faust_aiokafka.Consumer._commit)
    source = inspect.getsource(faust_consumer.Consumer._commit_offsets)
    assert "await self._commit(" in source


def test_committed_offsets_are_kept_by_partition() -> None:
    assert "_committed_offset" in faust_consumer.Consumer.__annotations__
    init = inspect.getsource(faust_consumer.Consumer.__init__)
    assert "self._committed_offset = " in init

    class Holder:
        def __init__(self) -> None:
            self._committed_offset = {"tp": 41}

    assert faust_internals.committed_offset(Holder(), "tp") == 41
    assert faust_internals.committed_offset(Holder(), "other") is None


def test_current_event_routes_table_writes() -> None:
    assert isinstance(faust.streams._current_event, ContextVar)

    class Event:
        pass

    event = Event()
    assert faust.streams.current_event() is None
    with faust_internals.current_event(event):
        assert faust.streams.current_event() is event
    assert faust.streams.current_event() is None
    # tables read it to pick the changelog partition
    route = inspect.getsource(faust_tables.Collection.partition_for_key)
    assert "current_event()" in route


async def test_fetch_batching_is_read_at_start() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    faust_internals.set_fetch_batching(consumer, 12345, 67)
    assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (12345, 67)
    start = inspect.getsource(AIOKafkaConsumer.start)
    assert "fetch_min_bytes=self._fetch_min_bytes" in start
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start
    await asyncio.sleep(0)


def test_the_consumer_hooks_the_eager_consumer_overrides() -> None:
    """worker.stream.consumer overrides these protected hooks; each must still be called."""
    assert hasattr(faust.App, "_new_transport")
    assert hasattr(faust_aiokafka.Consumer, "_new_consumer_thread")
    assert hasattr(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer")
    assert "wait_first" in vars(Service)
    drain = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert "self.wait_first(" in drain and "self.suspend_flow.wait()" in drain
    thread = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread)
    assert "self._create_worker_consumer(" in thread
    delegate = inspect.getsource(faust_consumer.ThreadDelegateConsumer)
    assert "self._new_consumer_thread()" in delegate


def test_the_fetch_loop_pause_the_eager_consumer_shortens() -> None:
    """EagerConsumer._wait_next_records replaces faust's 1 s sleep with every partition
    paused; on_buffer_drop is what re-activates a partition."""
    wait = inspect.getsource(faust_consumer.Consumer._wait_next_records)
    assert "self._get_active_partitions()" in wait and "await self.sleep(1)" in wait
    assert "active_partitions.add(tp)" in inspect.getsource(faust_consumer.Consumer.on_buffer_drop)


def test_the_fetch_filter_reaches_aiokafka() -> None:
    """EagerConsumer._getmany wraps the partitions faust fetches (FetchFilter): faust must
    still fetch through _getmany, and the driver pass them on to aiokafka's
    fetched_records, which tests them only with `bool()` and `in`."""
    from aiokafka.consumer.fetcher import Fetcher

    wait = inspect.getsource(faust_consumer.Consumer._wait_next_records)
    assert "self._getmany(" in wait
    fetch = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread._fetch_records)
    assert "fetcher.fetched_records(" in fetch and "active_partitions," in fetch
    drain = inspect.getsource(Fetcher.fetched_records)
    assert "if partitions and tp not in partitions:" in drain


def test_state_records_are_stored_locally_once_acknowledged() -> None:
    """StateTable.put applies a record to RocksDB in faust's changelog callback, which faust
    calls on acknowledgement and before it records the offset as stored."""
    from faust import topics as faust_topics
    from faust.stores import rocksdb as faust_rocksdb

    assert hasattr(faust_rocksdb.Store, "_db_for_partition")
    sent = inspect.getsource(faust_tables.Collection.send_changelog)
    assert "callback=self._on_changelog_sent" in sent
    on_sent = inspect.getsource(faust_tables.Collection._on_changelog_sent)
    assert "set_persisted_offset" in on_sent
    published = inspect.getsource(faust_topics.Topic._on_published)
    assert published.index("set_result(res)") < published.index("message.message.callback(")

    class Db:
        def __init__(self) -> None:
            self.data: dict[bytes, bytes] = {}

        def put(self, key: bytes, value: bytes) -> None:
            self.data[key] = value

        def delete(self, key: bytes) -> None:
            self.data.pop(key, None)

    class Store:
        def __init__(self) -> None:
            self.dbs = {3: Db()}

        def _db_for_partition(self, partition: int) -> Db:
            return self.dbs[partition]

    class Table:
        data = Store()

    faust_internals.write_local(Table, 3, b"k", b"v")
    assert Table.data.dbs[3].data == {b"k": b"v"}
    faust_internals.write_local(Table, 3, b"k", None)
    assert Table.data.dbs[3].data == {}


def test_changelog_partitions_are_told_apart_and_rebalances_end_after_the_seek() -> None:
    """The fetch filter holds stream partitions back until `app.rebalancing` is false: faust
    must still clear it only after the seek to the committed offsets and the queue clear
    (`Recovery._resume_streams`), and name changelog partitions by `_is_changelog_tp`."""
    from faust.tables import recovery as faust_recovery

    resume = inspect.getsource(faust_recovery.Recovery._resume_streams)
    seek, clear = resume.index("perform_seek()"), resume.index("flow_control.resume()")
    assert seek < clear < resume.index("app.on_rebalance_end()")
    assert "self.rebalancing = False" in inspect.getsource(faust.App.on_rebalance_end)
    assert "self.rebalancing = True" in inspect.getsource(faust.App.on_rebalance_start)
    changelog = inspect.getsource(faust_consumer.Consumer._is_changelog_tp)
    assert "changelog_topics" in changelog

    class Consumer:
        def _is_changelog_tp(self, tp: str) -> bool:
            return tp == "log"

    assert faust_internals.is_changelog(Consumer(), "log")
    assert not faust_internals.is_changelog(Consumer(), "runs")


async def test_source_records_reach_the_agent_as_they_came() -> None:
    """`RawRecords` replaces the schema's decode: a faust topic must still decode through
    `Schema.compile`, and the event must carry the record's own bytes and headers."""
    from faust.types import Message

    from worker.stream.faust_app import RawRecords

    app = faust.App("raw-records-test")
    decode = app.topic("runs", schema=RawRecords(key_type=bytes, value_type=bytes)).decode
    faust_decode = app.topic(
        "runs", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    ).decode
    for key, value in [(b"agent-1", b'{"run": 1}'), (None, b"\xff not json"), (b"k", None)]:
        message = Message("runs", 3, 17, 0.0, 0, [("h", b"v")], key, value, None)
        event, faust_event = await decode(message), await faust_decode(message)
        assert (event.key, event.value) == (key, value)
        assert (event.key, event.value, event.headers) == (
            faust_event.key,
            faust_event.value,
            faust_event.headers,
        )
        assert event.message is message
