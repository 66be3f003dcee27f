"""EagerConsumer.wait_first: inline delivery, and faust's semantics when a delivery blocks."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from worker.stream.consumer import PAUSED_FETCH_TIMEOUT_S, EagerConsumer


def consumer() -> EagerConsumer:
    """The consumer's wait_first needs only these attributes (no broker, no app)."""
    c = object.__new__(EagerConsumer)
    c.suspend_flow = asyncio.Event()
    c._stopped = asyncio.Event()
    c._crashed = asyncio.Event()
    c._loop = asyncio.get_running_loop()
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
