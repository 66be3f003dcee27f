"""Pacing: a commit's background work spread out so that it never stalls the records.

Each commit writes the states of every changed agent and builds the tries of every agent
whose hints changed: at 3,000 runs/s over 100 agents, a few hundred milliseconds of CPU at
once. Done in one go (or in slices that alternate with the record loop), the runs consumed
meanwhile queue up behind it, and the produce -> hints tail came from those bursts (p99
350-475 ms against 190-250 ms paced, `python -m benchmarks.e2e`). Paced, the work takes at
most `BACKGROUND_SHARE` of the event loop; the commit takes longer instead. Rebalances and
shutdown, which wait for that work, have it done at full speed, and so does a backlog,
where latency is the backlog's and throughput counts.
"""

from __future__ import annotations

import asyncio
import time

#: a commit's state writes and trie builds take at most this share of the event loop ...
#: (at 10,000 agents and 2,000 runs/s over 90 s, 2 GiB state cache: produce -> hints p99
#: 235, 224, 210 ms at 0.1 against 329, 413, 289 at 0.25, alternating; at 100 agents and
#: 3,000 runs/s 174 and 147 against 159 and 148)
BACKGROUND_SHARE = 0.1
#: ... unless the runs are learned this long after they were produced: in a backlog the
#: work runs at full speed, throughput first (paced, a 40,000-run backlog took 11% longer)
BACKLOG_AGE_S = 1.0
#: work done between two checks of the clock (a trie build, a partition's state writes)
SLICE_S = 0.002


def background_share(last_run_age_s: float) -> float:
    """The share of the loop a commit's work may take, from how long ago the last run
    learned was produced (by its record's timestamp: a producer whose clock runs behind
    looks like a backlog, which only turns pacing off)."""
    return 1.0 if last_run_age_s > BACKLOG_AGE_S else BACKGROUND_SHARE


class Pacer:
    """Rests between units of background work so that the work takes at most `share` of the
    time; with `share` 1 it only lets the loop run other tasks once per slice."""

    def __init__(self, share: float = BACKGROUND_SHARE, slice_s: float = SLICE_S) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        self.share = share
        self.slice_s = slice_s
        self._started = time.perf_counter()
        self._resting: asyncio.Future[None] | None = None

    def hurry(self) -> None:
        """Someone waits for this work (a rebalance, a shutdown): no more resting."""
        self.share = 1.0
        if self._resting is not None and not self._resting.done():
            self._resting.set_result(None)

    async def tick(self) -> None:
        """Call between two units of work: after a slice's worth of work, rest."""
        worked = time.perf_counter() - self._started
        if worked < self.slice_s:
            return
        if self.share >= 1:
            await asyncio.sleep(0)
        else:
            loop = asyncio.get_running_loop()
            self._resting = resting = loop.create_future()
            wake = loop.call_later(worked * (1 - self.share) / self.share, _wake, resting)
            try:
                await resting
            finally:
                wake.cancel()
                self._resting = None
        self._started = time.perf_counter()


def _wake(resting: asyncio.Future[None]) -> None:
    if not resting.done():
        resting.set_result(None)
