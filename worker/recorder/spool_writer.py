"""Finished runs waiting in memory, written to the spool in segments.

Callers append `(key, value)` to `pending` from any thread (never blocking, no syscall);
the sender's loop calls `write()`, which cuts the queue into segments of at most
`max_segment_runs` runs or `max_segment_bytes`, writes each durably and hands it to the
deliveries at once (under steady load the queue may not empty for a while). A write that
fails (disk full...) keeps its runs queued, in order, and is retried after a pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from worker.recorder.config import SenderConfig
from worker.recorder.deliveries import Deliveries
from worker.recorder.signals import Signals
from worker.recorder.spool import frame_size
from worker.recorder.spool_io import SpoolIO

log = logging.getLogger(__name__)


class SpoolWriter:
    """Writes the runs queued in memory to the spool, in order."""

    def __init__(
        self, config: SenderConfig, spool: SpoolIO, deliveries: Deliveries, signals: Signals
    ) -> None:
        self._config = config
        self._spool = spool
        self._deliveries = deliveries
        self._signals = signals
        #: records not on disk yet, oldest first
        self.pending: deque[tuple[bytes, bytes]] = deque()

    async def write(self) -> None:
        """Write everything queued; returns early only past the stop deadline while the
        disk refuses (the runs stay queued)."""
        limit_runs, limit_bytes = self._config.max_segment_runs, self._config.max_segment_bytes
        pending = self.pending
        while pending:
            keys: list[bytes] = []
            values: list[bytes] = []
            size = 0
            while pending and len(values) < limit_runs and size < limit_bytes:
                key, value = pending.popleft()
                keys.append(key)
                values.append(value)
                size += frame_size(key, value)
            try:
                segment = await self._spool.write(keys, values)
            except OSError as exc:
                # the runs stay owed and in memory; retried after a pause (disk full...)
                log.error("recorder: cannot write the spool (%s); retrying", exc)
                self._signals.last_error = f"spool write failed: {exc}"
                pending.extendleft(reversed(list(zip(keys, values, strict=True))))
                await asyncio.sleep(self._config.retry_backoff_s)
                if self._signals.past_deadline():
                    return
                continue
            self._deliveries.add(segment)
