"""The spool as the sender's event loop uses it: every file operation on one helper thread.

So the loop keeps serving the producer while a segment is written and fsync'ed; one thread,
so the spool's operations stay in the order they were asked for.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from worker.recorder.spool import Segment, Spool


class SpoolIO:
    """`Spool`'s operations as coroutines, for the loop the sender runs."""

    def __init__(self, spool: Spool, loop: asyncio.AbstractEventLoop) -> None:
        self._spool = spool
        self._loop = loop
        # no thread yet: the executor starts one on first use, on the sender's thread
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="run-recorder-spool")

    async def scan(self) -> tuple[list[Segment], int]:
        return await self._loop.run_in_executor(self._pool, self._spool.scan)

    async def write(self, keys: list[bytes], values: list[bytes]) -> Segment:
        return await self._loop.run_in_executor(self._pool, self._spool.write, keys, values)

    async def load(self, segment: Segment) -> Segment:
        return await self._loop.run_in_executor(self._pool, self._spool.load, segment)

    async def rewrite(self, segment: Segment, keep: list[int]) -> None:
        await self._loop.run_in_executor(self._pool, self._spool.rewrite, segment, keep)

    async def delete(self, segment: Segment) -> None:
        await self._loop.run_in_executor(self._pool, self._spool.delete, segment)

    async def reject(self, keys: list[bytes], values: list[bytes]) -> Path:
        return await self._loop.run_in_executor(self._pool, self._spool.reject, keys, values)

    def shutdown(self) -> None:
        """Wait for the operation under way, if any, and end the helper thread."""
        self._pool.shutdown(wait=True)
