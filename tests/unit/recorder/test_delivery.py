"""A segment's runs on their way to the broker: each counted as spooled once at most, open
until acknowledged or refused, a backlog segment damaged on reading rebuilt."""

from __future__ import annotations

from pathlib import Path

from worker.recorder.delivery import Delivery, RunState
from worker.recorder.spool import Segment


def segment(runs: int, loaded: bool = True) -> Segment:
    keys = [b"agent"] * runs if loaded else []
    values = [b"{}"] * runs if loaded else []
    return Segment(Path("x.seg"), runs, 100, keys, values)


def test_runs_are_counted_as_spooled_once_and_stay_open_until_settled() -> None:
    delivery = Delivery(segment(5), from_backlog=False)
    assert list(delivery.states) == [RunState.UNSENT] * 5
    assert delivery.mark_spooled([1, 3]) == 2
    assert delivery.mark_spooled([1, 3]) == 0  # already counted
    delivery.settle([0], RunState.ACKED)
    delivery.settle([4], RunState.REJECTED)
    assert delivery.open_indices() == [1, 2, 3]
    assert delivery.mark_spooled() == 1  # only run 2 was still uncounted
    assert list(delivery.states) == [
        RunState.ACKED,
        RunState.SPOOLED,
        RunState.SPOOLED,
        RunState.SPOOLED,
        RunState.REJECTED,
    ]
    assert delivery.mark_spooled() == 0


def test_a_backlog_segment_counts_as_spooled_already_and_shrinks_if_damaged() -> None:
    scanned = segment(4, loaded=False)
    delivery = Delivery(scanned, from_backlog=True)
    assert delivery.mark_spooled() == 0  # counted by the process that left it
    assert delivery.open_indices() == [0, 1, 2, 3]
    scanned.keys, scanned.values, scanned.runs = [b"a"] * 2, [b"{}"] * 2, 2  # damage
    delivery.loaded()
    assert list(delivery.states) == [RunState.SPOOLED] * 2
    assert delivery.open_indices() == [0, 1]
