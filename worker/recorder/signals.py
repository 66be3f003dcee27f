"""What the sender's parts and its callers tell each other: work arrived, retry now, stop.

Made with the sender, on the caller's thread; used on the sender's event loop (callers reach
it through `loop.call_soon_threadsafe`), except `last_error`, which `stats()` reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class Signals:
    """The wake-ups, the stop deadline and the last error the sender's parts share."""

    def __init__(self) -> None:
        # made here, not on the loop: a caller's first wake-up may come before the loop runs
        # (asyncio.Event binds to the loop that first waits on it)
        #: set when there may be work: runs queued, a delivery ended, a stop request
        self.work = asyncio.Event()
        #: set to cut retry pauses short: `flush()`, a stop request, a new connection
        self.retry_now = asyncio.Event()
        #: monotonic; None until a stop is requested
        self.deadline: float | None = None
        #: deliveries stop here, a little before the deadline, leaving time to clean up
        self.deliver_until = 0.0
        #: set when deliveries must stop: their tasks end at their next step even if a
        #: library swallowed the cancellation (aiokafka's start() turns it into an error)
        self.halted = False
        #: the last error a part met (spool write, connection, send), for `stats()`
        self.last_error: str | None = None

    def wake(self) -> None:
        self.work.set()

    def kick(self) -> None:
        """Work now, and retry failed sends without waiting for their backoff."""
        self.work.set()
        self.retry_now.set()

    def stop(self, deadline: float) -> None:
        """Stop by `deadline` (monotonic); the earliest of several requests holds."""
        self.deadline = deadline if self.deadline is None else min(deadline, self.deadline)
        margin = min(1.0, max(self.deadline - time.monotonic(), 0.0) * 0.25)
        self.deliver_until = self.deadline - margin
        self.kick()

    @property
    def stopping(self) -> bool:
        return self.deadline is not None

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def time_left(self, floor: float) -> float:
        """Seconds to the deadline (now if none is set), at least `floor`."""
        return max((self.deadline or time.monotonic()) - time.monotonic(), floor)

    async def pause(self, seconds: float) -> None:
        """Sleep, cut short by a stop request or a `retry now`."""
        if self.deadline is not None:
            return
        self.retry_now.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.retry_now.wait(), seconds)

    async def settle(self, tasks: list[asyncio.Task[None]]) -> None:
        """Wait for cancelled tasks, but not forever: a task stuck in a library call must
        not keep the segments from being rewritten and the thread from ending."""
        if tasks:
            await asyncio.wait(tasks, timeout=self.time_left(1.0))
