"""Spool segments on their way to the broker, and the accounts that follow them.

Up to `max_inflight_segments` segments are sent at once, each by a task of its own that
sends its open runs (see `produce`) until every one is acknowledged or refused for good,
pausing with backoff between attempts, then deletes the segment. Acknowledged and refused
runs are settled in the ledger as they are answered; refused ones are kept under
`rejected/`. Runs that wait (a failed attempt, not acknowledged `spooled_after_s` after the
write, or unsent at close) are counted as spooled, once each.

At shutdown the tasks are cancelled, and a segment partly delivered is rewritten with only
its open runs, which the next recorder sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from worker.recorder.config import SenderConfig
from worker.recorder.connection import Connection
from worker.recorder.delivery import Delivery, RunState
from worker.recorder.ledger import Ledger
from worker.recorder.metrics import RecorderMetrics
from worker.recorder.produce import produce
from worker.recorder.signals import Signals
from worker.recorder.spool import MAGIC, Segment, frame_size
from worker.recorder.spool_io import SpoolIO

log = logging.getLogger(__name__)


class Deliveries:
    """The segments waiting to be sent and those being sent, one task each."""

    def __init__(
        self,
        config: SenderConfig,
        spool: SpoolIO,
        connection: Connection,
        ledger: Ledger,
        metrics: RecorderMetrics,
        signals: Signals,
    ) -> None:
        self._config = config
        self._spool = spool
        self._connection = connection
        self._ledger = ledger
        self._metrics = metrics
        self._signals = signals
        self._ready: deque[Delivery] = deque()
        self._active: dict[asyncio.Task[None], Delivery] = {}
        #: mark the runs still unacknowledged `spooled_after_s` after the write as spooled
        self._timers: dict[Delivery, asyncio.TimerHandle] = {}

    @property
    def idle(self) -> bool:
        """Nothing waiting to be sent, nothing being sent."""
        return not (self._ready or self._active)

    async def take_backlog(self) -> None:
        """Queue the segments earlier recorders left in the spool (first in line)."""
        backlog, damaged = await self._spool.scan()
        if damaged:
            self._metrics.spool_damaged_files.inc(damaged)
        for segment in backlog:
            self._ready.append(Delivery(segment, from_backlog=True))
            self._ledger.disk_changed(segment.runs, segment.size)
        if backlog:
            runs = sum(s.runs for s in backlog)
            self._ledger.add_backlog(runs, sum(s.size - len(MAGIC) for s in backlog))
            log.info("recorder: %d runs left in the spool by earlier runs, sending", runs)

    def add(self, segment: Segment) -> None:
        """A segment just written: on disk now, to be sent."""
        self._ledger.disk_changed(segment.runs, segment.size)
        delivery = Delivery(segment, from_backlog=False)
        self._timers[delivery] = asyncio.get_running_loop().call_later(
            self._config.spooled_after_s, self._spooled_timer, delivery
        )
        self._ready.append(delivery)
        self.start()

    def start(self) -> None:
        """Start sending waiting segments, as many as `max_inflight_segments` allows."""
        while self._ready and len(self._active) < self._config.max_inflight_segments:
            delivery = self._ready.popleft()
            task = asyncio.create_task(self._deliver(delivery))
            self._active[task] = delivery
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("recorder: delivery failed", exc_info=task.exception())
        self._signals.wake()

    async def _deliver(self, delivery: Delivery) -> None:
        segment = delivery.segment
        if not segment.loaded:
            await self._load(delivery)
        signals = self._signals
        backoff = self._config.retry_backoff_s
        while True:
            producer = await self._connection.producer()
            if signals.halted:
                return  # the shutdown keeps what is left of the segment
            todo = delivery.open_indices()
            if not todo:
                break
            outcome = await produce(producer, self._config.topic, segment, todo, signals)
            delivery.settle(outcome.acked, RunState.ACKED)
            if outcome.acked:
                self._metrics.runs_sent.inc(len(outcome.acked))
                self._ledger.settled(len(outcome.acked), _frames(segment, outcome.acked))
            if outcome.rejected:
                await self._reject(delivery, outcome.rejected)
            if not outcome.failed:
                break
            self._mark_spooled(delivery, outcome.failed)
            if signals.halted:
                return
            await signals.pause(backoff)
            backoff = self._config.next_backoff(backoff)
        self._cancel_timer(delivery)
        await self._spool.delete(segment)
        self._ledger.disk_changed(-segment.runs, -segment.size)

    async def _load(self, delivery: Delivery) -> None:
        """Read a backlog segment's records; a file damaged since start-up keeps its intact
        prefix, and the runs lost with the rest are no longer owed."""
        segment = delivery.segment
        runs_before, frames_before = segment.runs, segment.size - len(MAGIC)
        try:
            await self._spool.load(segment)
        except OSError as exc:
            segment.keys, segment.values, segment.runs = [], [], 0
            log.error("recorder: cannot read spool segment %s (%s)", segment.path, exc)
        if segment.runs != runs_before:  # damaged since start-up: fewer runs to send
            self._metrics.spool_damaged_files.inc()
            frames = sum(map(frame_size, segment.keys, segment.values))
            self._ledger.settled(runs_before - segment.runs, frames_before - frames)
        delivery.loaded()

    async def _reject(self, delivery: Delivery, indices: list[int]) -> None:
        segment = delivery.segment
        keys = [segment.keys[i] for i in indices]
        values = [segment.values[i] for i in indices]
        try:
            path = await self._spool.reject(keys, values)
        except OSError as exc:
            log.error("recorder: cannot keep %d refused runs (%s); retrying", len(keys), exc)
            return  # their state stays open: they are tried again, nothing is dropped
        delivery.settle(indices, RunState.REJECTED)
        self._metrics.runs_failed.labels("rejected_by_broker").inc(len(indices))
        self._ledger.settled(len(indices), _frames(segment, indices))
        log.error(
            "recorder: the broker refused %d runs for good (%s); kept in %s",
            len(indices),
            self._signals.last_error,
            path,
        )

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
            self._metrics.runs_spooled.inc(newly)

    async def stop(self) -> None:
        """Cancel the deliveries; what they did not send stays in the spool."""
        in_flight = list(self._active.items())
        for task, _ in in_flight:
            task.cancel()
        await self._signals.settle([task for task, _ in in_flight])
        for _, delivery in in_flight:
            await self._keep_rest(delivery)
        for delivery in [*(d for _, d in in_flight), *self._ready]:
            self._cancel_timer(delivery)
            self._mark_spooled(delivery, None)  # unsent at close: they wait in the spool

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
            await self._spool.rewrite(segment, keep)
        except OSError as exc:  # the old file stays: its acknowledged runs are re-sent
            log.error("recorder: cannot rewrite %s (%s)", segment.path, exc)
            return
        if keep:
            self._ledger.disk_changed(segment.runs - runs_before, segment.size - size_before)
        else:
            self._ledger.disk_changed(-runs_before, -size_before)


def _frames(segment: Segment, indices: list[int]) -> int:
    return sum(frame_size(segment.keys[i], segment.values[i]) for i in indices)
