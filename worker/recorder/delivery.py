"""One spool segment on its way to the broker: where each of its runs stands.

A run is open (`UNSENT` or `SPOOLED`) until the broker acknowledged it (`ACKED`) or refused it
for good (`REJECTED`). `SPOOLED` is `UNSENT` already counted in `runs_spooled_total` (it
waited: not acknowledged in time, a failed attempt, left at close, or from an earlier
process), so that each run is counted there once at most.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from worker.recorder.spool import Segment


class RunState(IntEnum):
    """Where one run of a segment being delivered stands (kept one byte per run)."""

    UNSENT = 0  # not acknowledged yet, not counted as spooled
    SPOOLED = 1  # not acknowledged yet, counted as spooled
    ACKED = 2  # the broker acknowledged it
    REJECTED = 3  # the broker refused it for good; kept under rejected/


#: not acknowledged nor rejected yet: still owed to the broker
OPEN = frozenset({RunState.UNSENT, RunState.SPOOLED})


class Delivery:
    """A segment being sent: the state of each of its runs, in the segment's order."""

    def __init__(self, segment: Segment, *, from_backlog: bool) -> None:
        self.segment = segment
        #: a segment an earlier process left counted as spooled there already
        self._first = RunState.SPOOLED if from_backlog else RunState.UNSENT
        self.states = bytearray([self._first]) * segment.runs

    def loaded(self) -> None:
        """After the segment's records were read: a file damaged since start-up holds fewer
        runs than scanned (only segments from the backlog are read, before any is sent)."""
        if len(self.states) != self.segment.runs:
            self.states = bytearray([self._first]) * self.segment.runs

    def open_indices(self) -> list[int]:
        """The runs neither acknowledged nor rejected."""
        return [i for i, s in enumerate(self.states) if s in OPEN]

    def mark_spooled(self, indices: Iterable[int] | None = None) -> int:
        """Mark the runs at `indices` (None: all) that are `UNSENT` as `SPOOLED`; how many."""
        states = self.states
        newly = [
            i
            for i in (range(len(states)) if indices is None else indices)
            if states[i] == RunState.UNSENT
        ]
        for i in newly:
            states[i] = RunState.SPOOLED
        return len(newly)

    def settle(self, indices: Iterable[int], state: RunState) -> None:
        """The runs at `indices` are done with: `ACKED` or `REJECTED`."""
        for i in indices:
            self.states[i] = state
