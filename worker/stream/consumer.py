"""faust's aiokafka consumer, tuned: no four tasks per record, batches fetched in bulk.

faust hands each fetched record to its topic channel with
`await self.wait_first(callback(message), self.suspend_flow.wait())`, so that a delivery
blocked by suspended flow control (a rebalance) can be abandoned. `wait_first` wraps both
coroutines, plus the consumer's stopped and crashed events, in tasks and waits for the first:
about 140 us per record on this machine, more than half of a bare faust agent's cost.

Nearly every delivery finishes without waiting (the channel queue has room, flow is on).
`EagerConsumer` runs the delivery inline up to its first suspension; only a delivery that
really blocks is handed to the original `wait_first`, as a task that resumes the coroutine
where it stopped, so rebalances behave exactly as before.

When the stream buffer fills up, faust pauses fetching from the partitions that feed it, and
once every partition is paused, its fetch loop sleeps a whole second before it looks again,
whatever happens meanwhile. Delivering inline fills the buffer fast, so a bare agent
alternated ~0.2 s of work with ~0.9 s of idling (4 such stalls per 20,000 records).
`EagerConsumer` wakes the fetch loop as soon as a partition is resumed instead. Likewise,
with only some partitions paused, faust fetches the others with a one-second timeout, which
at a backlog's end (the paused partitions hold the rest) was a second of idling; such a
fetch now waits at most `PAUSED_FETCH_TIMEOUT_S`.

A fetch is handed a `FetchFilter` instead of faust's live set of active partitions: a
rebalance can empty that set while the fetch waits, and aiokafka then took the records of
every partition, changelog partitions that table recovery had just sought too, which faust
then dropped; the recovery waited for them forever. The filter is read when the records are
taken, holds nothing while the flow is stopped, and is never "all partitions".

faust also fixes the fetch at `fetch_min_bytes=1` (the broker answers as soon as one record
is there) and `fetch_max_wait_ms=1500`. Every answer is a round trip through faust's
consumer thread, so at 1,000 runs/s the worker spent more time passing small batches
between threads than learning, and fell behind. `BatchingConsumerThread` applies the
app's `fetch_min_bytes` / `fetch_max_wait_ms` (settings) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from worker.stream.faust_internals import is_changelog, set_fetch_batching


def _waits_on(coro: Any, event: asyncio.Event) -> bool:
    """Is `coro` an unstarted `event.wait()`?"""
    frame = getattr(coro, "cr_frame", None)
    return (
        frame is not None
        and coro.cr_code is asyncio.Event.wait.__code__
        and frame.f_locals.get("self") is event
    )


async def _resume(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Any:
    """Drive `coro`, already stepped once and now waiting on `waiting_on`, as a task would.

    `waiting_on` is the future the coroutine yielded (None for a bare `sleep(0)` yield). When
    this task is cancelled, the awaited future is cancelled, so the coroutine sees the
    cancellation at its await, as with `asyncio.Task.cancel`."""
    cancelled = False
    while True:
        if waiting_on is None:
            await asyncio.sleep(0)
        else:
            waiting_on._asyncio_future_blocking = False
            try:
                await asyncio.wait((waiting_on,))
            except asyncio.CancelledError:
                cancelled = True
                waiting_on.cancel()
        try:
            waiting_on = coro.send(None)
        except StopIteration as stop:
            if cancelled:
                raise asyncio.CancelledError() from None
            return stop.value


#: the longest a fetch waits while some partitions are paused for a full stream buffer
PAUSED_FETCH_TIMEOUT_S = 0.05


class FetchFilter:
    """The partitions a fetch may take records of, decided when the consumer thread takes
    them (aiokafka `Fetcher.fetched_records(partitions)`), not when the fetch was asked.

    aiokafka moves a partition's position past the records it hands out; records faust then
    drops are skipped for good unless a seek follows. Two ways that happened:

    - faust hands the consumer thread its live set of active partitions. A fetch can wait up
      to its timeout, and meanwhile a rebalance pauses every partition: the set becomes
      empty, and aiokafka reads an empty set as "no filter" and takes the records of every
      assigned partition, paused changelog partitions too. If that happens after table
      recovery has sought a changelog partition to its start but before it resumes the flow,
      faust drops those records (flow stopped) while the partition's position has moved past
      them: the recovery waits for records that never come again ("No event received for
      active tp"). This filter is never empty, and holds no partition while the flow is
      stopped.
    - At the end of a rebalance faust resumes the stream partitions, then seeks them to
      their committed offsets, then resumes its flow control, which clears the streams'
      queues (`Recovery._resume_streams`). The flow is on all along (table recovery turned
      it on), so records fetched between the resume and the seek reached the stream queues,
      were cleared, and set faust's read offset past the seek: read again after it, they
      were dropped as already read. The agent never saw them (the gap guard in `offsets`
      restarted the worker in 3 of 12 fault-suite scenarios run back to back). Until the
      rebalance has ended (`app.rebalancing` false, set after that seek and clear) this
      filter holds only changelog partitions, which table recovery reads.
    """

    __slots__ = ("consumer", "partitions")

    def __init__(self, consumer: Any, partitions: Any) -> None:
        self.consumer = consumer
        self.partitions = partitions

    def __bool__(self) -> bool:
        return True  # an empty filter would mean "every partition" to aiokafka

    def __contains__(self, tp: Any) -> bool:
        consumer = self.consumer
        if not consumer.flow_active or tp not in self.partitions:
            return False
        return not consumer.app.rebalancing or is_changelog(consumer, tp)

    def __repr__(self) -> str:
        return f"FetchFilter({self.partitions!r}, flow_active={self.consumer.flow_active})"


class BatchingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread with the app's fetch batching settings."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app: Any = self.app  # a WorkerApp (worker.stream.faust_app), which sets these
        set_fetch_batching(consumer, app.fetch_min_bytes, app.fetch_max_wait_ms)
        return consumer


class EagerConsumer(faust_aiokafka.Consumer):
    """Delivers records inline; falls back to faust's `wait_first` only when one blocks."""

    _resumed: asyncio.Event | None = None

    def _new_consumer_thread(self) -> BatchingConsumerThread:
        return BatchingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def on_buffer_drop(self, tp: Any) -> None:
        super().on_buffer_drop(tp)
        if self._resumed is not None:
            self._resumed.set()

    async def _wait_next_records(self, timeout: float) -> Any:
        """faust's, except that with every partition paused for a full buffer it waits until
        one is resumed (or `timeout`), instead of sleeping the whole `timeout`."""
        if self.flow_active and not self.app.client_only and not self._get_active_partitions():
            if self._resumed is None:
                self._resumed = asyncio.Event()
            self._resumed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resumed.wait(), timeout)
            return {}, self._get_active_partitions()
        if self._buffered_partitions:
            # some partitions are paused: a fetch of the others alone must not wait out the
            # whole timeout for data that may not come while those are resumed meanwhile
            timeout = min(timeout, PAUSED_FETCH_TIMEOUT_S)
        return await super()._wait_next_records(timeout)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        """faust's, with the partitions filtered when the records are taken (`FetchFilter`)."""
        if active_partitions is not None:
            active_partitions = FetchFilter(self, active_partitions)
        return await super()._getmany(active_partitions, timeout)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if not (
            len(coros) == 2
            and timeout is None
            and asyncio.iscoroutine(coros[0])
            and _waits_on(coros[1], self.suspend_flow)
            and not self.suspend_flow.is_set()
        ):
            return await super().wait_first(*coros, timeout=timeout)
        delivery, suspended = coros
        try:
            waiting_on = delivery.send(None)
        except StopIteration as stop:
            suspended.close()
            return WaitResults([delivery], [stop.value], False)
        except BaseException:
            suspended.close()
            raise
        return await super().wait_first(_resume(delivery, waiting_on), suspended)


class EagerTransport(faust_aiokafka.Transport):
    Consumer = EagerConsumer
