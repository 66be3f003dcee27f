"""The recorder's background thread: finished runs to the spool, then to Kafka.

Callers only append `(key, value)` to a deque and, when the thread is idle, wake it; they
never wait for disk or network. The thread runs its own asyncio loop with:

- the writer: drains the deque into spool segments (disk I/O on one helper thread, so the
  loop keeps serving the producer while a segment is fsync'ed);
- the connector: starts the AIOKafkaProducer (acks=all, idempotent), retrying with backoff
  while the broker is unreachable;
- deliveries: up to `max_inflight_segments` segments at a time, each sending its unacked
  records (the same bytes every time) until the broker acknowledged all of them, then
  deleting the segment.

Stopping (`request_stop(deadline)`): the deque is written to disk, however long that takes
(`spooled` is set then), deliveries go on until nothing is owed or the deadline is near,
then they are cancelled, partly delivered segments are rewritten with what is left, and
the producer is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import murmur2

from worker.recorder.config import SenderConfig
from worker.recorder.connection import Connection
from worker.recorder.delivery import Delivery, RunState
from worker.recorder.ledger import Ledger
from worker.recorder.metrics import RecorderMetrics
from worker.recorder.signals import Signals
from worker.recorder.spool import MAGIC, Segment, Spool, frame_size
from worker.recorder.spool_io import SpoolIO

log = logging.getLogger(__name__)

#: the broker will never take these records: kept under rejected/, counted as failed
PERMANENT_ERRORS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
)


class Sender:
    """Owns the spool and the producer, on a thread of its own."""

    def __init__(
        self,
        config: SenderConfig,
        spool: Spool,
        ledger: Ledger,
        metrics: RecorderMetrics,
    ) -> None:
        self.config = config
        self.spool = spool
        self.ledger = ledger
        self.metrics = metrics
        self._incoming: deque[tuple[bytes, bytes]] = deque()
        self._wake_scheduled = False
        self._loop = asyncio.new_event_loop()
        self._signals = Signals()
        self._spool_io = SpoolIO(spool, self._loop)
        self._connection = Connection(config, self._signals, self._loop)
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
        self._incoming.append((key, value))
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
        self._ready: deque[Delivery] = deque()
        self._active: dict[asyncio.Task[None], Delivery] = {}
        #: mark the runs still unacknowledged `spooled_after_s` after the write as spooled
        self._timers: dict[Delivery, asyncio.TimerHandle] = {}
        try:
            backlog, damaged = await self._spool_io.scan()
            if damaged:
                self.metrics.spool_damaged_files.inc(damaged)
            for segment in backlog:
                self._ready.append(Delivery(segment, from_backlog=True))
                self.ledger.disk_changed(segment.runs, segment.size)
            if backlog:
                runs = sum(s.runs for s in backlog)
                self.ledger.add_backlog(runs, sum(s.size - len(MAGIC) for s in backlog))
                log.info("recorder: %d runs left in the spool by earlier runs, sending", runs)
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
        signals = self._signals
        while True:
            signals.work.clear()
            await self._write_incoming()
            self._start_deliveries()
            if signals.stopping:
                if not (self._incoming or self._ready or self._active):
                    return
                if time.monotonic() >= signals.deliver_until:
                    return
            # idle from here: callers must wake us again. Checked after clearing the flag, so
            # a record appended meanwhile is either seen now or comes with a wake-up.
            self._wake_scheduled = False
            if self._incoming:
                continue
            timeout = signals.deliver_until - time.monotonic() if signals.stopping else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signals.work.wait(), timeout)

    async def _write_incoming(self) -> None:
        limit_runs, limit_bytes = self.config.max_segment_runs, self.config.max_segment_bytes
        incoming = self._incoming
        while incoming:
            keys: list[bytes] = []
            values: list[bytes] = []
            size = 0
            while incoming and len(values) < limit_runs and size < limit_bytes:
                key, value = incoming.popleft()
                keys.append(key)
                values.append(value)
                size += frame_size(key, value)
            try:
                segment = await self._spool_io.write(keys, values)
            except OSError as exc:
                # the runs stay owed and in memory; retried after a pause (disk full...)
                log.error("recorder: cannot write the spool (%s); retrying", exc)
                self._signals.last_error = f"spool write failed: {exc}"
                incoming.extendleft(reversed(list(zip(keys, values, strict=True))))
                await asyncio.sleep(self.config.retry_backoff_s)
                if self._signals.past_deadline():
                    return
                continue
            self.ledger.disk_changed(segment.runs, segment.size)
            delivery = Delivery(segment, from_backlog=False)
            self._timers[delivery] = self._loop.call_later(
                self.config.spooled_after_s, self._spooled_timer, delivery
            )
            self._ready.append(delivery)
            self._start_deliveries()  # under steady load this loop may not end for a while

    def _spooled_timer(self, delivery: Delivery) -> None:
        del self._timers[delivery]
        self._mark_spooled(delivery, None)

    def _cancel_timer(self, delivery: Delivery) -> None:
        timer = self._timers.pop(delivery, None)
        if timer is not None:
            timer.cancel()

    def _mark_spooled(self, delivery: Delivery, indices: list[int] | None) -> None:
        """Count runs (all still open, or those at `indices`) as spooled, once each."""
        newly = delivery.mark_spooled(indices)
        if newly:
            self.metrics.runs_spooled.inc(newly)

    def _start_deliveries(self) -> None:
        while self._ready and len(self._active) < self.config.max_inflight_segments:
            delivery = self._ready.popleft()
            task = asyncio.create_task(self._deliver(delivery))
            self._active[task] = delivery
            task.add_done_callback(self._delivery_done)

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("recorder: delivery failed", exc_info=task.exception())
        self._signals.wake()

    async def _deliver(self, delivery: Delivery) -> None:
        segment = delivery.segment
        if not segment.loaded:
            runs_before, frames_before = segment.runs, segment.size - len(MAGIC)
            try:
                await self._spool_io.load(segment)
            except OSError as exc:
                segment.keys, segment.values, segment.runs = [], [], 0
                log.error("recorder: cannot read spool segment %s (%s)", segment.path, exc)
            if segment.runs != runs_before:  # damaged since start-up: fewer runs to send
                self.metrics.spool_damaged_files.inc()
                frames = sum(map(frame_size, segment.keys, segment.values))
                self.ledger.settled(runs_before - segment.runs, frames_before - frames)
            delivery.loaded()
        backoff = self.config.retry_backoff_s
        while True:
            producer = await self._connection.producer()
            if self._signals.halted:
                return  # the shutdown keeps what is left of the segment
            todo = delivery.open_indices()
            if not todo:
                break
            failed = await self._send(producer, delivery, todo)
            if not failed:
                break
            self._mark_spooled(delivery, failed)
            if self._signals.halted:
                return
            await self._signals.pause(backoff)
            backoff = self.config.next_backoff(backoff)
        self._cancel_timer(delivery)
        await self._spool_io.delete(segment)
        self.ledger.disk_changed(-segment.runs, -segment.size)

    async def _send(
        self, producer: AIOKafkaProducer, delivery: Delivery, todo: list[int]
    ) -> list[int]:
        """Send the records at `todo`; returns those that failed and may be retried."""
        segment, topic = delivery.segment, self.config.topic
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        failed: list[int] = []
        rejected: list[int] = []
        for position, i in enumerate(todo):
            try:
                future = await producer.send(topic, segment.values[i], key=segment.keys[i])
            except PERMANENT_ERRORS as exc:
                rejected.append(i)
                self._note_rejected(exc)
            except Exception as exc:  # broker away, metadata timeout...: retry them all later
                self._signals.last_error = f"send failed: {exc!r}"
                log.debug("recorder: send failed (%r); retrying", exc)
                failed.extend(todo[position:])
                break
            else:
                sent.append((i, future))
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        acked: list[int] = []
        suspects: list[int] = []
        for (i, _), result in zip(sent, results, strict=True):
            if not isinstance(result, BaseException):
                acked.append(i)
            elif isinstance(result, PERMANENT_ERRORS):
                suspects.append(i)  # maybe only its batch was too large: tried alone below
                self._note_rejected(result)
            else:
                self._signals.last_error = f"send failed: {result!r}"
                failed.append(i)
        for i in suspects:
            try:
                await self._send_alone(producer, segment.keys[i], segment.values[i])
            except PERMANENT_ERRORS as exc:
                rejected.append(i)
                self._note_rejected(exc)
            except Exception as exc:
                self._signals.last_error = f"send failed: {exc!r}"
                failed.append(i)
            else:
                acked.append(i)
        if failed:
            log.debug("recorder: %d runs not acknowledged; retrying", len(failed))
        delivery.settle(acked, RunState.ACKED)
        if acked:
            self.metrics.runs_sent.inc(len(acked))
            self.ledger.settled(len(acked), self._frames(segment, acked))
        if rejected:
            await self._reject(delivery, rejected)
        return failed

    async def _send_alone(self, producer: AIOKafkaProducer, key: bytes, value: bytes) -> None:
        """Send one record in a batch of its own, to the partition the default partitioner
        picks: a batch-level refusal (batch over the topic's max.message.bytes) is then about
        this record alone."""
        topic = self.config.topic
        partitions = sorted(await producer.partitions_for(topic))
        partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        batch = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            raise MessageSizeTooLargeError(f"a record of {len(value)} bytes fits in no batch")
        batch.close()
        await (await producer.send_batch(batch, topic, partition=partition))

    def _note_rejected(self, exc: BaseException) -> None:
        self._signals.last_error = f"broker refused a run: {exc!r}"

    async def _reject(self, delivery: Delivery, indices: list[int]) -> None:
        segment = delivery.segment
        keys = [segment.keys[i] for i in indices]
        values = [segment.values[i] for i in indices]
        try:
            path = await self._spool_io.reject(keys, values)
        except OSError as exc:
            log.error("recorder: cannot keep %d refused runs (%s); retrying", len(keys), exc)
            return  # their state stays open: they are tried again, nothing is dropped
        delivery.settle(indices, RunState.REJECTED)
        self.metrics.runs_failed.labels("rejected_by_broker").inc(len(indices))
        self.ledger.settled(len(indices), self._frames(segment, indices))
        log.error(
            "recorder: the broker refused %d runs for good (%s); kept in %s",
            len(indices),
            self._signals.last_error,
            path,
        )

    @staticmethod
    def _frames(segment: Segment, indices: list[int]) -> int:
        return sum(frame_size(segment.keys[i], segment.values[i]) for i in indices)

    async def _shutdown(self) -> None:
        await self._write_incoming()  # whatever was recorded last reaches the disk first
        if not self._incoming:
            self.spooled.set()
        in_flight = list(self._active.items())
        for task, _ in in_flight:
            task.cancel()
        await self._signals.settle([task for task, _ in in_flight])
        for _, delivery in in_flight:
            await self._keep_rest(delivery)
        for delivery in [*(d for _, d in in_flight), *self._ready]:
            self._cancel_timer(delivery)
            self._mark_spooled(delivery, None)  # unsent at close: they wait in the spool
        if self.ledger.pending_runs():
            log.warning(
                "recorder: closing with %d runs unsent; they stay in %s for the next recorder",
                self.ledger.pending_runs(),
                self.spool.directory,
            )
        await self._connection.stop()

    async def _keep_rest(self, delivery: Delivery) -> None:
        """After a cancelled delivery: the segment keeps only its unacknowledged runs."""
        segment = delivery.segment
        if len(delivery.states) != segment.runs:  # cancelled while its segment was being read
            return
        keep = delivery.open_indices()
        if len(keep) == segment.runs:
            return
        runs_before, size_before = segment.runs, segment.size
        try:
            await self._spool_io.rewrite(segment, keep)
        except OSError as exc:  # the old file stays: its acknowledged runs are re-sent
            log.error("recorder: cannot rewrite %s (%s)", segment.path, exc)
            return
        if keep:
            self.ledger.disk_changed(segment.runs - runs_before, segment.size - size_before)
        else:
            self.ledger.disk_changed(-runs_before, -size_before)
