"""The faust app, built from the settings: consumer tuning, state table, source topics.

Everything faust-specific about how the worker is configured lives here; the rest of the
stream package sees an app, a table and a source topic.
"""

from __future__ import annotations

from typing import Any, cast

import faust
from faust.sensors import Monitor

from worker.kafka.clients import bootstrap_list, ssl_context
from worker.settings import KafkaSettings, Settings
from worker.stream.consumer import EagerTransport
from worker.stream.state.table import StateTable

TABLE_NAME = "agent-state"


class WorkerApp(faust.App):
    """faust's app with the tuned consumer (see `worker.stream.consumer`)."""

    #: fetch batching the consumer thread applies (set from the settings)
    fetch_min_bytes = 1
    fetch_max_wait_ms = 1500

    def _new_transport(self) -> EagerTransport:
        return EagerTransport(self.conf.broker_consumer, self)


class QuietMonitor(Monitor):
    """faust's Monitor without its per-message and per-event bookkeeping.

    faust calls these four hooks for every record (message counts by topic, time in and
    out, events by stream and task); nothing reads those figures (the faust web views are
    off, the worker keeps its own metrics), and they cost a few microseconds per record.
    The Monitor's other hooks (offsets, commits, tables) stay as faust has them."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


def credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """`broker_credentials` for faust.App from the Kafka security settings (None: PLAINTEXT)."""
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # checked by KafkaSettings
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def make_app(settings: Settings, partitions: int) -> WorkerApp:
    """The faust app for `settings`, its topics having `partitions` partitions."""
    s = settings
    kwargs: dict[str, Any] = {}
    broker_credentials = credentials(s.kafka)
    if broker_credentials is not None:
        kwargs["broker_credentials"] = broker_credentials
    app = WorkerApp(
        s.group_id,
        broker=[f"kafka://{server}" for server in bootstrap_list(s.bootstrap_servers)],
        store="rocksdb://",
        datadir=str(s.state_dir),
        autodiscover=False,
        web_enabled=False,
        Monitor=QuietMonitor,
        processing_guarantee=s.processing_guarantee,
        broker_commit_interval=s.commit_interval_s,
        # commits by time only (faust also commits every 10,000 records by default)
        broker_commit_every=1 << 62,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
        consumer_group_instance_id=s.group_instance_id or None,
        broker_client_id=s.kafka.client_id,
        table_standby_replicas=s.table_standby_replicas,
        topic_partitions=partitions,
        topic_replication_factor=s.topics.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        worker_redirect_stdouts=False,
        key_serializer="raw",
        value_serializer="raw",
        **kwargs,
    )
    app.fetch_min_bytes = s.fetch_min_bytes
    app.fetch_max_wait_ms = s.fetch_max_wait_ms
    return app


#: RocksDB memory per partition's database: faust's defaults (64 MiB write buffers x 3 and a
#: 2 GiB block cache, each per partition) could take several GB; with these at most
#: 2 x 4 MiB of write buffers and a 4 MiB block cache (reads of agents not held in memory
#: are few and the OS page cache serves them too). 4 rather than 8 MiB: 100,000 agents in
#: 990 MiB against 1,049, and no slower at 100 or 10,000 agents (docs/performance.md)
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 4 * 1024 * 1024,
}


def make_table(app: faust.App, partitions: int) -> StateTable:
    """The agent-state table (RocksDB with a changelog): agent snapshots and deltas, and each
    partition's learned run ids (`worker.stream.state.records`)."""
    table = app.tables.add(
        StateTable(
            app,
            name=TABLE_NAME,
            default=None,
            beacon=app.tables.beacon,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            options=dict(ROCKSDB_OPTIONS),
            # compaction only cleans closed segments: 64 MiB ones (not 1 GiB) let the broker
            # drop replaced deltas and snapshots soon, which keeps a rebuild from it short
            extra_topic_configs={"segment.bytes": str(64 * 1024 * 1024)},
            help="agent snapshots and deltas, learned run ids per partition",
        )
    )
    return cast(StateTable, table)


class RawRecords(faust.Schema[bytes, bytes]):
    """Source records as they came: key and value bytes untouched (the processor decodes).

    faust's schema would pass each key and value through its codec registry (the raw codec,
    ~10 us per record) only to get the same bytes back."""

    def compile(self, app: Any, **_: Any) -> Any:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode


def make_source(app: faust.App, settings: Settings, partitions: int) -> Any:
    """The topics the agent reads: the runs topic and the internal rekey topic, raw bytes."""
    topics = settings.topics
    return app.topic(
        topics.runs,
        topics.rekey_topic,
        schema=RawRecords(key_type=bytes, value_type=bytes),
        partitions=partitions,
    )


class FaustWorker(faust.Worker):
    """faust's worker (signals, ordered stop) with our services started and stopped around
    the app: `service.start()` before faust starts consuming, `service.stop()` after faust
    committed its last offsets."""

    def __init__(self, service: Any, **kwargs: Any) -> None:
        super().__init__(service.app, **kwargs)
        self.service = service
        self.spinner = None  # a terminal spinner's escape codes do not belong in logs

    async def on_first_start(self) -> None:
        await self.service.start()
        await super().on_first_start()

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self.service.stop()
