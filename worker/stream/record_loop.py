"""The faust agent: every source record through the processor, then what its outcome asks."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from worker.observability.metrics import WorkerMetrics
from worker.stream.dead_letter import DeadLetters, where
from worker.stream.offsets import Offsets
from worker.stream.pending_sends import PendingSends
from worker.stream.processor import Outcome, Processor, Result

log = logging.getLogger(__name__)


class HasConsumer(Protocol):
    """The faust app, as far as the loop needs it: its consumer (created once it starts)."""

    @property
    def consumer(self) -> Any: ...


#: the loop gets a turn after this much processing (publishing and heartbeats run meanwhile)
YIELD_AFTER_S = 0.02


class RecordLoop:
    """Consumes the source stream: offsets checked, records processed, outcomes acted on."""

    def __init__(
        self,
        runs_topic: str,
        rekey_topic: str,
        processor: Processor,
        offsets: Offsets,
        sends: PendingSends,
        dead_letters: DeadLetters,
        metrics: WorkerMetrics,
        app: HasConsumer,
    ) -> None:
        self.runs_topic = runs_topic
        self.rekey_topic = rekey_topic
        self.processor = processor
        self.offsets = offsets
        #: rekeyed and dead-lettered records not yet acknowledged (the commit waits for them)
        self.sends = sends
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.app = app
        #: the timestamp (Unix seconds) of the last record taken: how far behind the loop is
        self.last_timestamp = 0.0

    async def __call__(self, stream: Any) -> None:
        runs_topic = self.runs_topic
        metrics = self.metrics
        learned = metrics.learned
        accuracy = metrics.accuracy
        next_offset = self.offsets.next_offset
        yielded_at = time.perf_counter()
        async for event in stream.events():
            started = time.perf_counter()
            message = event.message
            key = (message.topic, message.partition)
            if next_offset.get(key) != message.offset:  # first record, or a jump: check it
                await self.offsets.check_gap(message, self.app.consumer)
            next_offset[key] = message.offset + 1
            self.last_timestamp = message.timestamp or 0.0
            if message.topic == runs_topic:
                metrics.consumed.inc()
            try:
                result = self.processor.process(message.value, message.partition, event)
            except Exception as exc:  # a bug must not stop the partition: DLQ it, loudly
                metrics.errors.labels("process").inc()
                log.exception("unexpected error processing %s", where(message))
                result = Result(Outcome.REJECTED, reason="internal", detail=repr(exc)[:500])
            if result.outcome is Outcome.LEARNED:  # the common outcome, without a coroutine
                learned.inc()
                if result.learned is not None:
                    accuracy.observe(result.learned)
            else:
                await self._act(message, result)
            metrics.processing.observe(time.perf_counter() - started)
            if started - yielded_at > YIELD_AFTER_S:
                await asyncio.sleep(0)
                yielded_at = time.perf_counter()

    async def _act(self, message: Any, result: Result) -> None:
        """What an outcome other than LEARNED asks for (the loop counts those itself)."""
        outcome = result.outcome
        if outcome is Outcome.DUPLICATE:
            self.metrics.duplicates.inc()
        elif outcome is Outcome.REJECTED:
            await self.dead_letters.send(message, result.reason, result.detail)
        else:
            assert result.agent_id is not None and result.partition is not None
            # unchanged, keyed by its agent id, headers kept, to its home partition
            await self.sends.send(
                self.rekey_topic,
                result.partition,
                result.agent_id.encode(),
                message.value,
                list(message.headers or []),
            )
            self.metrics.rekeyed.inc()
