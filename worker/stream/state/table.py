"""The state table: faust's RocksDB table with a changelog, written changelog first.

faust's own `table[key] = value` writes RocksDB first. After a crash the local store could
then hold records the changelog never got, and faust's recovery, which re-applies the
changelog records after the last acknowledged offset, could even put older values back over
newer ones: a worker restarting on its disk would see a state nobody else sees. Written
through `StateTable.put`, every store (this worker's after a restart, another worker's, a
rebuilt one) holds a prefix of the changelog (rule 0 of the argument in docs/operations.md).

Under at_least_once the records go in one batch per partition through the worker's own
idempotent producer (`send_through`, `PartitionBatches`), not one by one through faust's;
faust's transactions (exactly_once) keep faust's own path, whose producer is transactional.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import faust

from worker.stream.faust_internals import write_local
from worker.stream.output_batches import PartitionBatches

#: a record waiting in a batch: its key, its value (None: delete) and its receipt
Pending = tuple[bytes, bytes | None, "SentReceipt"]


class SentReceipt:
    """A record sent to the changelog: `applied` once the broker acknowledged it and it was
    written to the local store; `failed` if the send failed."""

    __slots__ = ("applied", "sent")

    def __init__(self, sent: asyncio.Future[Any] | None) -> None:
        self.sent = sent  # None: batched (the table's `wait_changelog` waits for the batch)
        self.applied = False

    @property
    def failed(self) -> bool:
        sent = self.sent
        return (
            sent is not None and sent.done() and (sent.cancelled() or sent.exception() is not None)
        )


class StateTable(faust.Table[bytes, bytes]):
    """faust's table, written changelog first (see the module docstring).

    It also remembers the changelog sends not seen acknowledged yet: faust's flush before an
    offset commit gives up on its producer buffer after 100 ms without progress
    (`ProducerBuffer.flush_atmost`) and does not see a record that left the buffer but has
    not reached the Kafka client yet; `wait_changelog` waits for every record sent so far.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unacked: list[asyncio.Future[Any]] = []
        self._to_apply: dict[int, tuple[int, bytes, bytes | None, SentReceipt]] = {}
        #: the first failed changelog send: memory is then ahead of the changelog for good,
        #: so no offset may be committed again (the worker must restart and replay)
        self.failure: BaseException | None = None
        self._batches: PartitionBatches[Pending] | None = None
        self._topic = ""  # the changelog's name, for the batches
        super().__init__(*args, **kwargs)

    def send_through(self, producer: Any) -> None:
        """Send the changelog in batches through `producer` (idempotent, acks=all) unless
        faust's transactions are on."""
        if not self.app.in_transaction:
            self._batches = PartitionBatches(producer)
            self._topic = self.changelog_topic.get_topic_name()

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self._unacked.append(fut)
        return fut

    def put(self, partition: int, key: bytes, value: bytes | None) -> SentReceipt:
        """Send `key` = `value` (None: delete it) to the changelog partition `partition`; the
        local store gets it once the broker has it (batched: once `send_batches` sent it)."""
        if self._batches is not None:
            receipt = SentReceipt(None)
            self._batches.add((self._topic, partition), key, value, (key, value, receipt))
            return receipt
        sent = self.send_changelog(partition, key, value, value_serializer="raw")
        receipt = SentReceipt(sent)
        self._to_apply[id(sent)] = (partition, key, value, receipt)
        return receipt

    def _on_changelog_sent(self, fut: Any) -> None:
        """faust calls this once the broker acknowledged a changelog record, before it marks
        the record's offset as stored locally (`set_persisted_offset`)."""
        pending = self._to_apply.pop(id(fut), None)
        if pending is not None:
            partition, key, value, receipt = pending
            write_local(self, partition, key, value)
            receipt.applied = True
        super()._on_changelog_sent(fut)

    async def send_batches(self) -> None:
        """Hand the records put so far to the producer (they go while the caller goes on)."""
        if self._batches is not None:
            for (_, partition), records, sent in await self._batches.hand_over():
                sent.add_done_callback(functools.partial(self._on_batch_sent, partition, records))
                self._unacked.append(sent)

    def _on_batch_sent(
        self, partition: int, records: list[Pending], sent: asyncio.Future[Any]
    ) -> None:
        """A batch is done: acknowledged, its records go to the local store in order, and the
        store's persisted offset (where a recovery resumes) moves past them."""
        if sent.cancelled() or sent.exception() is not None:
            return  # `wait_changelog` raises it
        for key, value, receipt in records:
            write_local(self, partition, key, value)
            receipt.applied = True
        metadata = sent.result()
        self.data.set_persisted_offset(metadata.topic_partition, metadata.offset + len(records) - 1)

    def forget_failed(self) -> None:
        """Drop the bookkeeping of sends that failed (faust calls nothing for them)."""
        for ident, (_, _, _, receipt) in list(self._to_apply.items()):
            if receipt.failed:
                del self._to_apply[ident]

    async def wait_changelog(self) -> int:
        """Wait until the broker acknowledged every changelog record sent so far.

        Raises the send error if one failed, then and at every later call: the caller must
        not commit offsets (the states in memory hold runs the changelog does not)."""
        await self.send_batches()
        waited = 0
        while self._unacked and self.failure is None:
            pending, self._unacked = self._unacked, []
            waited += len(pending)
            results = await asyncio.gather(*pending, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                self.forget_failed()
                self.failure = errors[0]
        if self.failure is not None:
            raise self.failure
        return waited
