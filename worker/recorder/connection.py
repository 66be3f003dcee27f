"""The sender's connection to Kafka: one AIOKafkaProducer, started with retries.

While the broker is unreachable the producer's start is retried with a growing pause (cut
short by `flush()` or a stop request); runs wait in the spool meanwhile. Deliveries wait
for `producer()`; the producer stays for the life of the sender (aiokafka reconnects by
itself once started) and is stopped at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer

from worker.recorder.config import SenderConfig
from worker.recorder.signals import Signals

log = logging.getLogger(__name__)


class Connection:
    """Starts the producer (acks=all, idempotent: the recorder fixes those options)."""

    def __init__(
        self, config: SenderConfig, signals: Signals, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._config = config
        self._signals = signals
        #: resolved once a producer has started
        self._started: asyncio.Future[AIOKafkaProducer] = loop.create_future()

    async def connect(self) -> None:
        """Start a producer, retrying until one starts or the sender stops."""
        signals = self._signals
        backoff = self._config.retry_backoff_s
        failures = 0
        while True:
            producer = AIOKafkaProducer(**self._config.producer_kwargs)
            try:
                await producer.start()
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                if signals.stopping:
                    return  # stopping (a cancellation may have surfaced as this error)
                failures += 1
                signals.last_error = f"cannot connect to Kafka: {exc}"
                level = logging.WARNING if failures == 1 or failures % 60 == 0 else logging.DEBUG
                log.log(level, "recorder: cannot reach Kafka (%s); runs wait in the spool", exc)
                await signals.pause(backoff)
                backoff = self._config.next_backoff(backoff)
                continue
            if failures:
                log.info("recorder: connected to Kafka after %d failed attempts", failures)
            self._started.set_result(producer)
            signals.retry_now.set()  # deliveries pausing after a failure go now
            return

    async def producer(self) -> AIOKafkaProducer:
        """The started producer, once there is one."""
        # shielded: a delivery cancelled while it waits must not cancel the connection's
        return await asyncio.shield(self._started)

    async def stop(self) -> None:
        """Stop the producer, if one started, by the stop deadline (at least 50 ms)."""
        if not self._started.done():
            return
        try:
            await asyncio.wait_for(self._started.result().stop(), self._signals.time_left(0.05))
        except Exception as exc:  # incl. timeout: the runs are on disk anyway
            log.debug("recorder: producer stop: %r", exc)
