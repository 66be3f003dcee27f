"""The state table: faust's RocksDB table with a changelog, written changelog first.

faust's own `table[key] = value` writes RocksDB first. After a crash the local store could
then hold records the changelog never got, and faust's recovery, which re-applies the
changelog records after the last acknowledged offset, could even put older values back over
newer ones: a worker restarting on its disk would see a state nobody else sees. Written
through `StateTable.put`, every store (this worker's after a restart, another worker's, a
rebuilt one) holds a prefix of the changelog (rule 0 of the argument in docs/operations.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from worker.stream.faust_internals import write_local


class SentReceipt:
    """A record sent to the changelog: `applied` once the broker acknowledged it and it was
    written to the local store; `failed` if the send failed."""

    __slots__ = ("applied", "sent")

    def __init__(self, sent: asyncio.Future[Any]) -> None:
        self.sent = sent
        self.applied = False

    @property
    def failed(self) -> bool:
        sent = self.sent
        return sent.done() and (sent.cancelled() or sent.exception() is not None)


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
        super().__init__(*args, **kwargs)

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self._unacked.append(fut)
        return fut

    def put(self, partition: int, key: bytes, value: bytes | None) -> SentReceipt:
        """Send `key` = `value` (None: delete it) to the changelog partition `partition`; the
        local store gets it once the broker has it."""
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

    def forget_failed(self) -> None:
        """Drop the bookkeeping of sends that failed (faust calls nothing for them)."""
        for ident, (_, _, _, receipt) in list(self._to_apply.items()):
            if receipt.failed:
                del self._to_apply[ident]

    async def wait_changelog(self) -> int:
        """Wait until the broker acknowledged every changelog record sent so far.

        Raises the send error if one failed, then and at every later call: the caller must
        not commit offsets (the states in memory hold runs the changelog does not)."""
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
