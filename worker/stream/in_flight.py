"""Records sent but not yet acknowledged, which the next offset commit must wait for.

The record loop sends dead letters and rekeyed runs without waiting for each delivery
(one round trip per record would cap it at ~150 records/s); their source offsets may only
be committed once the broker has them, so the commit guard waits for everything in here
first. A failed delivery fails that commit: the records are read again after the restart
rather than lost.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

#: past this many unacknowledged sends, the loop waits for the oldest (bounded memory)
MAX_IN_FLIGHT = 10_000


class InFlight:
    """Delivery futures of sends that offsets depend on, oldest first."""

    def __init__(self, limit: int = MAX_IN_FLIGHT) -> None:
        self.limit = limit
        self._pending: deque[asyncio.Future[Any]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    async def add(self, delivery: asyncio.Future[Any]) -> None:
        """Track `delivery`; wait for the oldest ones while over the limit."""
        self._pending.append(delivery)
        while len(self._pending) > self.limit:
            await self._pending.popleft()

    async def wait(self) -> int:
        """Until every tracked delivery is acknowledged; raises the first failure."""
        waited = 0
        while self._pending:
            batch = list(self._pending)
            self._pending.clear()
            waited += len(batch)
            results = await asyncio.gather(*batch, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        return waited
