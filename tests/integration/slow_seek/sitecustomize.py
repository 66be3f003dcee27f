"""Imported at start-up by a Python whose path holds this directory (a worker started by
`test_rebalance_gap.py`): faust's seek of the stream partitions to their committed offsets,
at the end of every rebalance, first waits `SLOW_SEEK_S`. That widens the window between
faust resuming the stream partitions and seeking them, in which records fetched were lost
(the gap guard's restarts of issue 20), from milliseconds to a second: every start of a
worker on a backlog crosses it."""

from __future__ import annotations

import asyncio
import os

from faust.transport import consumer as faust_consumer

SLOW_SEEK_S = float(os.environ.get("SLOW_SEEK_S", "1.0"))
_perform_seek = faust_consumer.Consumer.perform_seek


async def _slow_perform_seek(self: faust_consumer.Consumer) -> None:
    await asyncio.sleep(SLOW_SEEK_S)
    await _perform_seek(self)


faust_consumer.Consumer.perform_seek = _slow_perform_seek  # type: ignore[method-assign]
