"""Pacing: a commit's background work spread out so that it never stalls the records.

Each commit writes the states of every changed agent and builds the tries of every agent
whose hints changed: at 3,000 runs/s over 100 agents, a few hundred milliseconds of CPU at
once. Done in one go (or in slices that alternate with the record loop), the runs consumed
meanwhile queue up behind it, and the produce -> hints tail came from those bursts (p99
350-475 ms against 190-250 ms paced, `python -m benchmarks.e2e`). Paced, the work takes at
most `BACKGROUND_SHARE` of the event loop; the commit takes longer instead.
"""

from __future__ import annotations

import asyncio
import time

#: a commit's state writes and trie builds take at most this share of the event loop
BACKGROUND_SHARE = 0.25
#: work done between two checks of the clock (a trie build, a partition's state writes)
SLICE_S = 0.002


class Pacer:
    """Rests between units of background work so that the work takes at most `share` of the
    time; with `share` 1 it only lets the loop run other tasks once per slice."""

    def __init__(self, share: float = BACKGROUND_SHARE, slice_s: float = SLICE_S) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        self.share = share
        self.slice_s = slice_s
        self._started = time.perf_counter()

    async def tick(self) -> None:
        """Call between two units of work: after a slice's worth of work, rest."""
        worked = time.perf_counter() - self._started
        if worked < self.slice_s:
            return
        await asyncio.sleep(worked * (1 - self.share) / self.share)
        self._started = time.perf_counter()
