"""Pacing: background work rests so that it takes at most its share of the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import pytest

from worker.stream.pacing import BACKGROUND_SHARE, BACKLOG_AGE_S, Pacer, background_share


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def paced_work(pacer: Pacer, units: int, unit_s: float) -> float:
    started = time.perf_counter()
    for _ in range(units):
        await pacer.tick()
        busy(unit_s)
    return time.perf_counter() - started


async def beside_another_task(work: Awaitable[float], pause_s: float) -> tuple[float, int]:
    """Run `work` while another task (the record loop) takes a turn every `pause_s`; returns
    the work's elapsed time and the other task's turns."""
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(pause_s)

    other = asyncio.create_task(other_task())
    try:
        elapsed = await work
    finally:
        other.cancel()
    return elapsed, turns


async def test_work_at_a_quarter_share_takes_four_times_its_duration() -> None:
    """40 ms of work at share 0.25 rests at least 120 ms in between, and another task runs
    while it rests (the record loop does)."""
    work = paced_work(Pacer(share=0.25, slice_s=0.002), units=20, unit_s=0.002)
    elapsed, turns = await beside_another_task(work, pause_s=0.001)
    # the last unit's rest never comes: 19 units of work rested for, three times each
    assert elapsed >= 0.040 + 3 * 0.038 * 0.95
    assert turns >= 19


async def test_at_full_share_other_tasks_still_get_a_turn_each_slice() -> None:
    work = paced_work(Pacer(share=1.0, slice_s=0.002), units=10, unit_s=0.002)
    _, turns = await beside_another_task(work, pause_s=0)
    assert turns >= 9


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_a_share_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="share"):
        Pacer(share=share)


async def test_hurried_work_rests_no_more() -> None:
    pacer = Pacer(share=0.001, slice_s=0.002)  # a 2 ms slice would rest 2 s
    pacer.hurry()
    elapsed = await paced_work(pacer, units=5, unit_s=0.002)
    assert elapsed < 1.0


def test_work_is_paced_while_live_and_at_full_speed_in_a_backlog() -> None:
    assert background_share(0.2) == BACKGROUND_SHARE < 1
    assert background_share(BACKLOG_AGE_S + 0.5) == 1.0
    assert background_share(time.time()) == 1.0  # nothing taken yet: timestamp 0
