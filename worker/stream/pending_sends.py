"""Records the offset commit depends on (dead letters, rekeyed runs), sent in batches.

The record loop hands each record over without waiting for it: it joins an open batch of
its (topic, partition), in the order given, and the batches leave together `SEND_DELAY_S`
after the first of them was opened (at once when a commit asks). One `producer.send` per
record cost ~30 us (a future, the accumulator and the sender's bookkeeping per record), and
each batch costs a produce request's worth of Python in aiokafka (~100 us: encoding, the
sender, the response): sent at every turn of the loop, a bad record still cost as much as a
good one. Their source offsets may only be committed once the broker has
them: `wait` sends what is open and waits for every delivery; a failure fails that commit,
and the records are read again after the restart rather than lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

Headers = list[tuple[str, bytes]]
TopicPartition = tuple[str, int]

#: past this many records handed over and not yet acknowledged, `send` waits (bounded memory)
MAX_PENDING = 10_000
#: how long batches collect records before they leave (unless a commit asks first)
SEND_DELAY_S = 0.1


class PendingSends:
    """Batches per (topic, partition) not yet sent, and deliveries not yet acknowledged."""

    def __init__(self, producer: Any, limit: int = MAX_PENDING) -> None:
        self.producer = producer
        self.limit = limit
        #: batches not yet handed to the producer, oldest first per partition (the last one
        #: of each is open)
        self._batches: dict[TopicPartition, list[Any]] = {}
        self._deliveries: deque[tuple[asyncio.Future[Any], int]] = deque()  # (future, records)
        self._pending = 0  # records handed over and not yet acknowledged
        self._sending: asyncio.Task[None] | None = None
        self._now = asyncio.Event()  # set: the sender stops waiting for more records
        #: the first failure to hand a batch to the producer: those records are lost, so no
        #: offset may be committed again
        self.failure: BaseException | None = None

    def __len__(self) -> int:
        """Records handed over and not yet acknowledged."""
        return self._pending

    async def send(
        self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        """Queue one record for `topic[partition]`; waits only while over the limit.

        After a failure nothing is queued: no offset is committed again, so every record from
        here on is read again after the restart (`/healthz` asks for one)."""
        if self.failure is not None:
            return
        batches = self._batches.setdefault((topic, partition), [])
        if (
            not batches
            or batches[-1].append(timestamp=None, key=key, value=value, headers=headers) is None
        ):  # none open, or the open one is full: a new one (any first record fits)
            batch = self.producer.create_batch()
            fits = batch.append(timestamp=None, key=key, value=value, headers=headers)
            if fits is None:  # aiokafka takes any first record; never drop one silently
                raise RuntimeError(f"a {len(value or b'')}-byte record fits no batch")
            batches.append(batch)
        self._pending += 1
        self._sender(SEND_DELAY_S)
        while self._pending > self.limit and self.failure is None:
            await self._progress()

    async def wait(self) -> int:
        """Send what is open and wait until the broker has every record handed over so far;
        raises the first failure (then at every call: records were lost). Returns how many
        records it waited for."""
        waited = 0
        while self.failure is None and (self._batches or self._deliveries or self._busy()):
            waited += await self._progress()
        if self.failure is not None:
            raise self.failure
        return waited

    async def _progress(self) -> int:
        """One step towards an empty queue: the oldest delivery acknowledged, else the
        waiting batches handed to the producer. Returns the records acknowledged."""
        if self._deliveries:
            return await self._oldest_delivered()
        sending = self._sender(0.0)
        self._now.set()
        await asyncio.shield(sending)
        return 0

    def _busy(self) -> bool:
        return self._sending is not None and not self._sending.done()

    def _sender(self, delay: float) -> asyncio.Task[None]:
        """The task handing batches to the producer: the running one, else a new one that
        starts after `delay` (one at a time keeps each partition's batches in order)."""
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_batches(delay))
        return self._sending

    async def _send_batches(self, delay: float) -> None:
        """After `delay` (cut short by `_now`), hand every waiting batch to the producer,
        each partition's in order."""
        if delay and not self._now.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), delay)
        self._now.clear()
        try:
            while self._batches and self.failure is None:
                (topic, partition), batches = next(iter(self._batches.items()))
                batch = batches.pop(0)
                if not batches:
                    del self._batches[(topic, partition)]
                batch.close()  # nothing else may join it once handed over
                delivery = await self.producer.send_batch(batch, topic, partition=partition)
                self._deliveries.append((delivery, batch.record_count()))
        except Exception as exc:  # the producer is closed or timed out: the commit must fail
            self.failure = exc

    async def _oldest_delivered(self) -> int:
        """Wait for the oldest delivery; its records are no longer pending."""
        delivery, records = self._deliveries.popleft()
        try:
            await delivery
        except Exception as exc:
            if self.failure is None:
                self.failure = exc
        finally:
            self._pending -= records
        return records
