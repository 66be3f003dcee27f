"""EagerConsumer.wait_first: inline delivery, and faust's semantics when a delivery blocks."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.fetcher import Fetcher, FetchResult
from faust.types import TP

from worker.stream.consumer import PAUSED_FETCH_TIMEOUT_S, EagerConsumer, FetchFilter


def consumer() -> EagerConsumer:
    """The consumer's wait_first and fetch filter need only these attributes (no broker; of
    the app, whether it is rebalancing and which topics are changelogs)."""
    c = object.__new__(EagerConsumer)
    c.suspend_flow = asyncio.Event()
    c._stopped = asyncio.Event()
    c._crashed = asyncio.Event()
    c._loop = asyncio.get_running_loop()
    c.app = SimpleNamespace(  # type: ignore[assignment]
        rebalancing=False, tables=SimpleNamespace(changelog_topics={CHANGELOG.topic})
    )
    return c


async def test_a_delivery_that_does_not_wait_runs_inline_without_tasks() -> None:
    c = consumer()
    tasks_before = len(asyncio.all_tasks())
    seen = []

    async def deliver() -> str:
        seen.append(len(asyncio.all_tasks()))
        return "delivered"

    result = await c.wait_first(deliver(), c.suspend_flow.wait())
    assert result.results == ["delivered"] and not result.stopped
    assert seen == [tasks_before]  # ran in the caller's task: no task was started for it


async def test_a_blocked_delivery_completes_when_what_it_waits_for_happens() -> None:
    c = consumer()
    room = asyncio.get_running_loop().create_future()
    steps = []

    async def deliver() -> str:
        steps.append("before")
        value = await room
        steps.append(f"after {value}")
        return "delivered"

    waiting = asyncio.create_task(c.wait_first(deliver(), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["before"] and not waiting.done()
    room.set_result("room")
    await asyncio.wait_for(waiting, 1)
    assert steps == ["before", "after room"]


async def test_suspending_the_flow_abandons_a_blocked_delivery_at_its_await() -> None:
    c = consumer()
    never = asyncio.get_running_loop().create_future()
    outcome = []

    async def deliver() -> None:
        try:
            await never
        except asyncio.CancelledError:
            outcome.append("cancelled at the await")
            raise

    waiting = asyncio.create_task(c.wait_first(deliver(), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    c.suspend_flow.set()
    await asyncio.wait_for(waiting, 1)  # returns: the suspension won, as in faust
    await asyncio.sleep(0.01)
    assert outcome == ["cancelled at the await"]
    assert never.cancelled()


async def test_an_error_in_a_delivery_propagates() -> None:
    c = consumer()

    async def deliver() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        await c.wait_first(deliver(), c.suspend_flow.wait())


async def test_other_waits_use_faust_semantics() -> None:
    c = consumer()
    c.suspend_flow.set()  # flow suspended: no inline delivery even for the drain's call

    async def deliver() -> str:
        await asyncio.sleep(10)
        return "late"

    delivery = deliver()
    result = await asyncio.wait_for(c.wait_first(delivery, c.suspend_flow.wait()), 1)
    assert result.results == [True]  # the suspend event (Event.wait() -> True) won
    assert delivery.cr_frame is None  # and the delivery was cancelled, not left running


async def test_with_every_partition_paused_the_fetch_loop_wakes_when_one_resumes() -> None:
    """faust sleeps its whole 1 s timeout when a full stream buffer paused every partition;
    the eager consumer goes back to fetching as soon as a partition is resumed."""
    c = consumer()
    active: set[str] = set()
    c._get_active_partitions = lambda: active  # type: ignore[method-assign]
    c._buffered_partitions = {"tp-0"}  # paused because the stream buffer was full
    c.flow_active = True
    c.app = SimpleNamespace(client_only=False)

    async def fixed_sleep(seconds: float) -> None:
        raise AssertionError(f"slept a fixed {seconds} s instead of waiting for a resume")

    c.sleep = fixed_sleep  # type: ignore[method-assign]  # faust's own path sleeps 1 s
    waiting = asyncio.create_task(c._wait_next_records(timeout=30.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # nothing to fetch: it waits ...
    c.on_buffer_drop("tp-0")  # the buffer drained: faust re-activates the partition
    records, partitions = await asyncio.wait_for(waiting, 5.0)  # ... but not the 30 s
    assert records == {} and partitions == {"tp-0"}


async def test_with_some_partitions_paused_a_fetch_of_the_others_does_not_wait_a_second() -> None:
    """faust fetches the active partitions with a 1 s timeout; when the paused ones are the
    only ones with data left, that whole second was idle (the stall at a backlog's end)."""
    c = consumer()
    c._get_active_partitions = lambda: {"tp-1"}  # type: ignore[method-assign]
    c._buffered_partitions = {"tp-0"}
    c.flow_active = True
    c.app = SimpleNamespace(client_only=False)
    c.not_waiting_next_records = asyncio.Event()
    asked: list[float] = []

    async def getmany(active_partitions: set[str], timeout: float) -> dict[str, list[int]]:
        asked.append(timeout)
        return {}

    c._getmany = getmany  # type: ignore[method-assign]
    await c._wait_next_records(timeout=1.0)
    assert asked == [PAUSED_FETCH_TIMEOUT_S] and PAUSED_FETCH_TIMEOUT_S <= 0.1
    c._buffered_partitions = set()
    await c._wait_next_records(timeout=1.0)
    assert asked[-1] == 1.0  # nothing paused: faust's own timeout


# --- what a fetch may take, through a rebalance (the stuck changelog recovery) ---------------

STREAM = TP("runs", 3)
CHANGELOG = TP("g-agent-state-changelog", 3)


class _PartitionRecords:
    """aiokafka's PartitionRecords, reduced to what FetchResult reads: offsets only."""

    def __init__(self, offsets: list[int]) -> None:
        self._offsets = iter(offsets)
        self.next_fetch_offset = offsets[0]

    def __iter__(self) -> _PartitionRecords:
        return self

    def __next__(self) -> int:
        offset = next(self._offsets)
        self.next_fetch_offset = offset + 1
        return offset


class _Broker:
    """A real aiokafka `Fetcher.fetched_records` over records that "arrive" when the test
    says so; `position` is the consumer's position per partition (where it fetches next)."""

    def __init__(self) -> None:
        self.position: dict[TP, int] = {}
        self.fetcher = object.__new__(Fetcher)
        f: Any = self.fetcher
        f._records = {}
        f._fetch_waiters = set()
        f._loop = asyncio.get_running_loop()
        f._closed = False
        f._wait_consume_future = None
        f._subscriptions = SimpleNamespace(reassignment_in_progress=False, is_assigned=bool)
        broker = self

        class State:
            paused = False

            def __init__(self, tp: TP) -> None:
                self.tp = tp

            @property
            def position(self) -> int:
                return broker.position[self.tp]

            def consumed_to(self, offset: int) -> None:
                broker.position[self.tp] = offset

        self._assignment = SimpleNamespace(active=True, state_value=State)

    def arrive(self, tp: TP, offsets: list[int]) -> None:
        """A fetch response for `tp` lands: records buffered, waiting fetches woken."""
        self.position[tp] = offsets[0]
        self.fetcher._records[tp] = FetchResult(
            tp, assignment=self._assignment, partition_records=_PartitionRecords(offsets), backoff=0
        )
        for waiter in list(self.fetcher._fetch_waiters):
            self.fetcher._notify(waiter)

    async def getmany(self, partitions: Any, timeout: float) -> dict[TP, list[int]]:
        return await self.fetcher.fetched_records(partitions, timeout=timeout)  # type: ignore[no-any-return]


def rebalancing_consumer(broker: _Broker) -> EagerConsumer:
    """A consumer owning STREAM (fetching it) and CHANGELOG (paused, as faust keeps it)."""
    c = consumer()
    c.can_resume_flow = asyncio.Event()
    c.flow_active = True
    c._active_partitions = {STREAM}
    c._paused_partitions = {CHANGELOG}
    c._buffered_partitions = set()
    c._thread = SimpleNamespace(getmany=broker.getmany)  # type: ignore[assignment]
    return c


async def rebalance_during_fetch(c: EagerConsumer, broker: _Broker, fetch: Any) -> Any:
    """A fetch waits for data; a rebalance stops the flow and pauses every partition; table
    recovery seeks the changelog partition to its start (its records arrive) and has not
    resumed it yet. Returns what the waiting fetch took."""
    waiting = asyncio.create_task(fetch)
    await asyncio.sleep(0.01)
    c.stop_flow()  # faust's on_partitions_revoked ...
    c.pause_partitions({STREAM, CHANGELOG})  # ... and on_partitions_assigned
    broker.arrive(CHANGELOG, [0, 1, 2])  # recovery sought the changelog to 0: its records
    return await asyncio.wait_for(waiting, 5)


async def test_a_fetch_waiting_through_a_rebalance_takes_no_changelog_record() -> None:
    """The flake of test_rebalance_join_and_leave: the joining worker's recovery of a
    changelog partition got no record for minutes. aiokafka takes the records of every
    partition when the partition set it was given is empty, and faust gives it its live set
    of active partitions, which the rebalance empties while the fetch waits: the changelog
    records were taken (position at the end), then dropped by faust (flow stopped)."""
    broker = _Broker()
    c = rebalancing_consumer(broker)

    # faust's own call: the live set, empty by the time the records arrive
    taken = await rebalance_during_fetch(c, broker, broker.getmany(c._active_partitions, 0.3))
    assert taken == {CHANGELOG: [0, 1, 2]} and broker.position[CHANGELOG] == 3  # the loss

    broker = _Broker()
    c = rebalancing_consumer(broker)
    taken = await rebalance_during_fetch(c, broker, c._getmany(c._active_partitions, 0.3))
    assert taken == {} and broker.position[CHANGELOG] == 0  # left for the recovery to read

    c.resume_partitions({CHANGELOG})  # recovery resumes the changelog partition and the flow
    c.resume_flow()
    assert await c._getmany(c._get_active_partitions(), 0.3) == {CHANGELOG: [0, 1, 2]}


async def test_the_fetch_filter_follows_pauses_and_the_flow() -> None:
    c = consumer()
    c.flow_active = True
    live = {STREAM}
    fetch = FetchFilter(c, live)
    assert fetch and STREAM in fetch and CHANGELOG not in fetch
    live.clear()  # every partition paused: still a filter, not "all partitions"
    assert fetch and STREAM not in fetch
    live.add(CHANGELOG)
    assert CHANGELOG in fetch
    c.flow_active = False  # flow stopped: nothing may be taken
    assert CHANGELOG not in fetch
    c.flow_active = True
    live.add(STREAM)
    c.app.rebalancing = True  # until the rebalance ends, only what table recovery reads
    assert CHANGELOG in fetch and STREAM not in fetch
    c.app.rebalancing = False
    assert STREAM in fetch


async def test_stream_records_are_not_taken_before_the_rebalance_seeks_them() -> None:
    """The gap guard's restarts during rebalances (issue 20): faust resumes the stream
    partitions with the flow already on (table recovery turned it on), then seeks them to
    their committed offsets, then clears the stream queues. Records taken in between moved
    the position on, were cleared, and were dropped as already read after the seek. The
    fetch filter takes stream records only once the rebalance has ended."""
    broker = _Broker()
    c = rebalancing_consumer(broker)
    c.app.rebalancing = True  # on_rebalance_start, at the start of every rebalance
    broker.arrive(STREAM, [40, 41, 42])  # the committed offset is 40: what it fetches from
    taken = await c._getmany(c._get_active_partitions(), 0.2)  # resumed, not sought yet
    assert taken == {} and broker.position[STREAM] == 40  # left where the seek expects it

    # faust's own call in that window takes them: the loss
    assert await broker.getmany(c._get_active_partitions(), 0.2) == {STREAM: [40, 41, 42]}
    assert broker.position[STREAM] == 43

    broker = _Broker()
    c = rebalancing_consumer(broker)
    c.app.rebalancing = True
    broker.arrive(STREAM, [40, 41, 42])
    assert await c._getmany(c._get_active_partitions(), 0.2) == {}
    c.app.rebalancing = False  # on_rebalance_end: sought, queues cleared, flow resumed
    assert await c._getmany(c._get_active_partitions(), 0.2) == {STREAM: [40, 41, 42]}
