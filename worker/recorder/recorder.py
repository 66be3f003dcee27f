"""`RunRecorder`: record agent runs as SPEC 9 run records and get them into Kafka.

    rec = RunRecorder(bootstrap_servers="kafka:9092", spool_dir="/var/lib/agent/spool")
    with rec.run("planner") as run:
        with run.llm_call("planner", model_name="m") as call:
            call.set_usage(output_tokens=120, prompt_tokens=30, total_tokens=150)
        with run.tool_call("search"):
            ...
    rec.flush(timeout=60)
    rec.close(timeout=10)

Recording costs the caller a few microseconds and never waits for disk or network: a
finished run is encoded, counted against the spool limit and queued; a background thread
writes it to the spool and sends it (see `sender`). It works with the broker unreachable,
from any thread and from asyncio code.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import re
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from uuid import UUID

from prometheus_client import REGISTRY, CollectorRegistry

from worker.kafka.clients import bootstrap_list, client_kwargs
from worker.recorder.config import SenderConfig
from worker.recorder.errors import RecorderClosedError, RecordTooLargeError, SpoolFullError
from worker.recorder.ledger import Ledger
from worker.recorder.metrics import metrics_for
from worker.recorder.record import Run
from worker.recorder.sender import Sender
from worker.recorder.spool import Spool, frame_size
from worker.recorder.timestamps import TimestampInput
from worker.settings import DEFAULT_TOPICS, KafkaSettings

log = logging.getLogger(__name__)

DEFAULT_TOPIC = DEFAULT_TOPICS.runs
#: under the broker's default message.max.bytes (1 MiB + 12) and the worker's record limit
DEFAULT_MAX_RECORD_BYTES = 1_000_000
DEFAULT_MAX_SPOOL_BYTES = 256 * 1024 * 1024
#: how long close() waits past its timeout for runs still being written to the spool
SPOOL_WRITE_WAIT_S = 120
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
#: producer settings the recorder's guarantees depend on
_FIXED_PRODUCER_OPTIONS = frozenset(
    {"acks", "enable_idempotence", "bootstrap_servers", "key_serializer", "value_serializer",
     "partitioner", "transactional_id"}
)  # fmt: skip


def _forked(recorder: weakref.ref[RunRecorder]) -> None:
    """In a child process: its copy of a parent's recorder has no sender thread."""
    parent = recorder()
    if parent is not None:
        parent._in_forked_child()


@dataclass(frozen=True)
class RecorderStats:
    """A snapshot of what the recorder still owes the broker."""

    pending_runs: int
    spool_runs: int
    spool_bytes: int
    spool_limit_bytes: int
    #: the last error the sender met (connection, send), or None
    last_error: str | None


class RunRecorder:
    """Records finished runs to Kafka (`topic`, keyed by agent id) through a disk spool.

    - `spool_dir`: this recorder's own directory (locked while it is open); runs the broker
      has not acknowledged wait there, also across restarts of the process.
    - `kafka`: security settings, as the worker takes them (SASL PLAIN/SCRAM, SSL).
    - `registry`: the prometheus-client registry for the `agent_hints_recorder_*` metrics
      (None: not exposed).
    - `record_payloads`: keep calls' annotated_request / annotated_response (prompts and
      answers); left out by default.
    - `max_spool_bytes`: what may wait unsent; beyond it a finished run raises
      SpoolFullError. `max_record_bytes`: larger runs raise RecordTooLargeError.
    - `fsync`: fsync spool files (and their directory) before relying on them.
    - `producer_options`: more AIOKafkaProducer options (linger_ms, compression_type...);
      acks, idempotence and the partitioner are fixed.
    - `close_at_exit`: seconds `close()` gets at interpreter exit if the caller did not
      close (None: no exit hook).
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        spool_dir: str | os.PathLike[str],
        *,
        topic: str = DEFAULT_TOPIC,
        kafka: KafkaSettings | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        record_payloads: bool = False,
        max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        fsync: bool = True,
        producer_options: Mapping[str, Any] | None = None,
        close_at_exit: float | None = 5.0,
    ) -> None:
        if not bootstrap_list(bootstrap_servers):
            raise ValueError("bootstrap_servers: no broker address given")
        if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic):
            raise ValueError(f"topic {topic!r} is not a valid Kafka topic name")
        for name, value in (("max_spool_bytes", max_spool_bytes),
                            ("max_record_bytes", max_record_bytes)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        options = dict(producer_options or {})
        fixed = sorted(_FIXED_PRODUCER_OPTIONS & options.keys())
        if fixed:
            raise ValueError(f"producer_options may not set {', '.join(fixed)}: the recorder "
                             "fixes them (acks=all, idempotence, murmur2 by key)")  # fmt: skip
        self.topic = topic
        self.record_payloads = bool(record_payloads)
        self.max_record_bytes = max_record_bytes
        kafka = kafka or KafkaSettings(client_id="agent-hints-recorder")
        producer_kwargs = {
            **client_kwargs(bootstrap_servers, kafka),
            "linger_ms": 5,
            "max_request_size": max(1_048_576, max_record_bytes + 65_536),
            **options,
            "acks": "all",
            "enable_idempotence": True,
        }
        self._ledger = Ledger(max_spool_bytes)
        self._metrics = metrics_for(registry)
        spool = Spool(spool_dir, fsync=fsync)  # locks the directory (SpoolLockedError)
        self.spool_dir = spool.directory
        self._sender = Sender(SenderConfig(topic, producer_kwargs), spool, self._ledger,
                              self._metrics)  # fmt: skip
        self._metrics.track(self._ledger)
        self._sender.start()
        self._pid = os.getpid()
        os.register_at_fork(after_in_child=functools.partial(_forked, weakref.ref(self)))
        self._exit_timeout = close_at_exit
        if close_at_exit is not None:
            atexit.register(self._close_at_exit)

    # --- recording -------------------------------------------------------------------------

    def run(
        self,
        agent_id: str,
        *,
        run_id: UUID | str | None = None,
        started_at: TimestampInput | None = None,
    ) -> Run:
        """Start a run of `agent_id` now (or at `started_at`: ns since the epoch or an aware
        datetime). Use it as a context manager, or call `run.end()`."""
        return Run(self, agent_id, run_id=run_id, started_at=started_at)

    def submit(self, run: Run, record: bytes) -> None:
        """Take a finished run's record (called by `Run.end`)."""
        if self._pid != os.getpid():
            raise RecorderClosedError(
                f"this recorder was made in process {self._pid}, before a fork; make one in "
                "each process after forking, each with its own spool_dir"
            )
        if len(record) > self.max_record_bytes:
            self._metrics.runs_failed.labels("too_large").inc()
            raise RecordTooLargeError(
                f"run {run.id} of {run.agent_id!r} is {len(record)} bytes of JSON, over "
                f"max_record_bytes={self.max_record_bytes}; not recorded",
                run.id,
                record,
            )
        if not self._sender.alive and not self._ledger.closed:
            raise RecorderClosedError(
                f"the recorder's sender thread has stopped (see the log: {self._sender.last_error}"
                f"); run {run.id} not recorded"
            )
        key = run.agent_id.encode()
        ledger = self._ledger
        with ledger.lock:
            refused = ledger.admit(frame_size(key, record))
            if refused is None:
                self._sender.enqueue(key, record)
        if refused is None:
            self._metrics.runs_recorded.inc()
            return
        if refused == "closed":
            raise RecorderClosedError(f"the recorder is closed; run {run.id} not recorded")
        self._metrics.runs_failed.labels("spool_full").inc()
        raise SpoolFullError(
            f"spool full: {ledger.pending_bytes()} bytes of runs wait unsent in "
            f"{self.spool_dir} (max_spool_bytes={ledger.limit_bytes}); run {run.id} of "
            f"{run.agent_id!r} not recorded. Is the broker reachable? ({self._sender.last_error})",
            run.id,
            record,
        )

    # --- delivery --------------------------------------------------------------------------

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until every run recorded so far (spool included) is acknowledged by the
        broker. True if so; False if some are still unsent after `timeout` seconds."""
        if self._ledger.closed and not self._sender.alive:
            return self._ledger.pending_runs() == 0
        self._sender.kick()
        return self._ledger.wait_settled(timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop recording; send what is pending for at most `timeout` seconds.

        True when nothing was left unsent. Unsent runs stay in the spool, sent by the next
        recorder on the same `spool_dir`. Returns after `timeout`, or later only while runs
        recorded just before are still being written to disk (normally milliseconds: never
        returning before they are is what keeps them). Idempotent."""
        if self._pid != os.getpid():
            return True  # a forked child's copy: the parent owns the spool and the runs
        deadline = time.monotonic() + max(timeout, 0.0)
        if self._exit_timeout is not None:
            atexit.unregister(self._close_at_exit)
        self._ledger.close()
        self._sender.request_stop(deadline)
        if self._sender.join(deadline - time.monotonic()):
            self._metrics.untrack(self._ledger)
        elif not self._sender.spooled.wait(SPOOL_WRITE_WAIT_S):
            # only a disk that stopped answering gets here
            log.error("recorder: runs recorded before close() are not all on disk after %ds "
                      "(%s); they are lost if the process exits now",
                      SPOOL_WRITE_WAIT_S, self.spool_dir)  # fmt: skip
        return self._ledger.pending_runs() == 0

    async def aflush(self, timeout: float = 60.0) -> bool:
        """`flush()` without blocking the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float = 10.0) -> bool:
        """`close()` without blocking the event loop."""
        return await asyncio.to_thread(self.close, timeout)

    def _in_forked_child(self) -> None:
        self._ledger.close()
        self._sender.spool.close()  # the child's copy of the lock descriptor
        if self._exit_timeout is not None:
            atexit.unregister(self._close_at_exit)

    def _close_at_exit(self) -> None:
        if self._exit_timeout is not None and not self._ledger.closed:
            self.close(self._exit_timeout)

    @property
    def closed(self) -> bool:
        return self._ledger.closed

    def stats(self) -> RecorderStats:
        ledger = self._ledger
        return RecorderStats(
            pending_runs=ledger.pending_runs(),
            spool_runs=ledger.spool_runs(),
            spool_bytes=ledger.spool_bytes(),
            spool_limit_bytes=ledger.limit_bytes,
            last_error=self._sender.last_error,
        )

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> RunRecorder:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"RunRecorder(topic={self.topic!r}, spool_dir={str(self.spool_dir)!r}, {state})"
