"""The recorder's background thread: finished runs to the spool, then to Kafka.

Callers only append `(key, value)` to a deque and, when the thread is idle, wake it; they
never wait for disk or network. The thread runs an asyncio loop of its own, shared by
three parts (the way aiokafka's producer splits into an accumulator and a sender):

- `SpoolWriter` (spool_writer.py): drains the deque into spool segments (disk I/O on one
  helper thread, `SpoolIO`, so the loop keeps serving the producer during an fsync);
- `Connection` (connection.py): starts the AIOKafkaProducer (acks=all, idempotent),
  retrying with backoff while the broker is unreachable;
- `Deliveries` (deliveries.py): up to `max_inflight_segments` segments at a time, each
  sending its open runs (`produce.py`; the same bytes every time) until the broker has
  acknowledged or refused every one, then deleting the segment.

They signal each other through `Signals` (work arrived, retry now, stop); the `Sender`
below wires them and owns start and shutdown. Stopping (`request_stop(deadline)`): the
deque is written to disk, however long that takes (`spooled` is set then), deliveries go
on until nothing is owed or the deadline is near, then they are cancelled, partly
delivered segments are rewritten with what is left, and the producer is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from worker.recorder.config import SenderConfig
from worker.recorder.connection import Connection
from worker.recorder.deliveries import Deliveries
from worker.recorder.ledger import Ledger
from worker.recorder.metrics import RecorderMetrics
from worker.recorder.signals import Signals
from worker.recorder.spool import Spool
from worker.recorder.spool_io import SpoolIO
from worker.recorder.spool_writer import SpoolWriter

log = logging.getLogger(__name__)


class Sender:
    """Owns the spool and the producer, on a thread of its own."""

    def __init__(
        self,
        config: SenderConfig,
        spool: Spool,
        ledger: Ledger,
        metrics: RecorderMetrics,
    ) -> None:
        self.spool = spool
        self._ledger = ledger
        self._loop = asyncio.new_event_loop()
        self._signals = signals = Signals()
        self._spool_io = SpoolIO(spool, self._loop)
        self._connection = Connection(config, signals, self._loop)
        self._deliveries = Deliveries(
            config, self._spool_io, self._connection, ledger, metrics, signals
        )
        self._writer = SpoolWriter(config, self._spool_io, self._deliveries, signals)
        #: the writer's queue, appended to by callers (the recording hot path)
        self._pending = self._writer.pending
        #: True while the thread has work or a wake-up is on its way
        self._wake_scheduled = False
        self._thread = threading.Thread(target=self._run, name="run-recorder-sender", daemon=True)
        #: set once everything recorded before the stop request is on disk (or never will be)
        self.spooled = threading.Event()

    @property
    def last_error(self) -> str | None:
        """The last error met (spool write, connection, send), or None."""
        return self._signals.last_error

    # --- caller side (any thread) ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def enqueue(self, key: bytes, value: bytes) -> None:
        """Hand one record over. Never blocks; call with the ledger's lock held.

        Wakes the thread only when it is idle (`_wake_scheduled` False): while it works, it
        finds new records itself, and the caller makes no syscall."""
        self._pending.append((key, value))
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._loop.call_soon_threadsafe(self._signals.wake)

    def kick(self) -> None:
        """Work now: write what is queued and retry failed sends without waiting for their
        backoff (for `flush()`)."""
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._signals.kick)

    def request_stop(self, deadline: float) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._signals.stop, deadline)

    def join(self, timeout: float) -> bool:
        self._thread.join(max(timeout, 0.0))
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # never die silently: what is unsent stays in the spool
            self._signals.last_error = f"the sender stopped: {exc!r}"
            log.exception("recorder sender stopped by an unexpected error")
        finally:
            self.spooled.set()
            with contextlib.suppress(Exception):
                self.spool.close()
            self._loop.close()

    async def _main(self) -> None:
        try:
            await self._deliveries.take_backlog()
            connector = asyncio.create_task(self._connection.connect())
            try:
                await self._serve()
            finally:
                self._signals.halted = True
                connector.cancel()
                await self._signals.settle([connector])
                await self._shutdown()
        finally:
            self._spool_io.shutdown()

    async def _serve(self) -> None:
        signals, writer, deliveries = self._signals, self._writer, self._deliveries
        while True:
            signals.work.clear()
            await writer.write()
            deliveries.start()
            if signals.stopping:
                if not self._pending and deliveries.idle:
                    return
                if time.monotonic() >= signals.deliver_until:
                    return
            # idle from here: callers must wake us again. Checked after clearing the flag, so
            # a record appended meanwhile is either seen now or comes with a wake-up.
            self._wake_scheduled = False
            if self._pending:
                continue
            timeout = signals.deliver_until - time.monotonic() if signals.stopping else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signals.work.wait(), timeout)

    async def _shutdown(self) -> None:
        await self._writer.write()  # whatever was recorded last reaches the disk first
        if not self._pending:
            self.spooled.set()
        await self._deliveries.stop()
        if self._ledger.pending_runs():
            log.warning(
                "recorder: closing with %d runs unsent; they stay in %s for the next recorder",
                self._ledger.pending_runs(),
                self.spool.directory,
            )
        await self._connection.stop()
