"""One attempt at producing a segment's open runs, sorted by what the broker answered.

Each run's record is sent as it is in the segment (the same bytes on every attempt). A run
in a batch the broker refused for good is tried again in a batch of its own before it is
called refused: the batch may have been too large, not the run.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import murmur2
from aiokafka.structs import RecordMetadata

from worker.recorder.signals import Signals
from worker.recorder.spool import Segment

log = logging.getLogger(__name__)

#: the broker will never take these records: kept under rejected/, counted as failed
PERMANENT_ERRORS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
)


@dataclass
class Outcome:
    """Indices into the segment, by what became of each run sent."""

    acked: list[int] = field(default_factory=list)
    #: refused for good
    rejected: list[int] = field(default_factory=list)
    #: not acknowledged (broker away, timeout...): to be sent again
    failed: list[int] = field(default_factory=list)


async def produce(
    producer: AIOKafkaProducer, topic: str, segment: Segment, todo: list[int], signals: Signals
) -> Outcome:
    """Send the runs at `todo` and wait for the broker's answers; errors go to
    `signals.last_error` as they come."""
    outcome = Outcome()
    sent: list[tuple[int, asyncio.Future[RecordMetadata]]] = []
    for position, i in enumerate(todo):
        try:
            future = await producer.send(topic, segment.values[i], key=segment.keys[i])
        except PERMANENT_ERRORS as exc:
            outcome.rejected.append(i)
            _note_rejected(signals, exc)
        except Exception as exc:  # broker away, metadata timeout...: retry them all later
            signals.last_error = f"send failed: {exc!r}"
            log.debug("recorder: send failed (%r); retrying", exc)
            outcome.failed.extend(todo[position:])
            break
        else:
            sent.append((i, future))
    results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
    suspects: list[int] = []
    for (i, _), result in zip(sent, results, strict=True):
        if not isinstance(result, BaseException):
            outcome.acked.append(i)
        elif isinstance(result, PERMANENT_ERRORS):
            suspects.append(i)  # maybe only its batch was too large: tried alone below
            _note_rejected(signals, result)
        else:
            signals.last_error = f"send failed: {result!r}"
            outcome.failed.append(i)
    for i in suspects:
        try:
            await _send_alone(producer, topic, segment.keys[i], segment.values[i])
        except PERMANENT_ERRORS as exc:
            outcome.rejected.append(i)
            _note_rejected(signals, exc)
        except Exception as exc:
            signals.last_error = f"send failed: {exc!r}"
            outcome.failed.append(i)
        else:
            outcome.acked.append(i)
    if outcome.failed:
        log.debug("recorder: %d runs not acknowledged; retrying", len(outcome.failed))
    return outcome


async def _send_alone(producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes) -> None:
    """Send one record in a batch of its own, to the partition the default partitioner
    picks: a batch-level refusal (batch over the topic's max.message.bytes) is then about
    this record alone."""
    partitions = sorted(await producer.partitions_for(topic))
    partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
    batch = producer.create_batch()
    if batch.append(key=key, value=value, timestamp=None) is None:
        raise MessageSizeTooLargeError(f"a record of {len(value)} bytes fits in no batch")
    batch.close()
    await (await producer.send_batch(batch, topic, partition=partition))


def _note_rejected(signals: Signals, exc: BaseException) -> None:
    signals.last_error = f"broker refused a run: {exc!r}"
