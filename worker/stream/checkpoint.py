"""Checkpoints: agent states written, and acknowledged by the changelog, before offsets commit.

A run's statistics and its id are stored in one record (see `state_cache`), so after a crash
a replayed run is either in the stored state (a duplicate) or not learned at all, provided an
offset is never committed ahead of the records that hold its run. Two pieces keep that:
`StateTable` remembers the changelog sends, and `guard_commits` writes what changed once
faust has chosen a commit's offsets, then makes the offset commit wait for those sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import faust

from worker.observability.metrics import WorkerMetrics
from worker.stream.faust_internals import Commit, wrap_offset_commit, write_local
from worker.stream.pacing import Pacer
from worker.stream.state_cache import StateCache

log = logging.getLogger(__name__)


class Receipt:
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
    """faust's table, written changelog first: `put` sends a record to the changelog and
    writes it to the local RocksDB only once the broker acknowledged it.

    faust's own `table[key] = value` writes RocksDB first. After a crash the local store
    could then hold records the changelog never got, and faust's recovery, which re-applies
    the changelog records after the last acknowledged offset, could even put older values
    back over newer ones: a worker restarting on its disk would see a state nobody else
    sees. Written this way, every store (this worker's after a restart, another worker's, a
    rebuilt one) holds a prefix of the changelog.

    It also remembers the changelog sends not seen acknowledged yet: faust's flush before an
    offset commit gives up on its producer buffer after 100 ms without progress
    (`ProducerBuffer.flush_atmost`) and does not see a record that left the buffer but has
    not reached the Kafka client yet; `wait_changelog` waits for every record sent so far.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unacked: list[asyncio.Future[Any]] = []
        self._to_apply: dict[int, tuple[int, bytes, bytes | None, Receipt]] = {}
        #: the first failed changelog send: memory is then ahead of the changelog for good,
        #: so no offset may be committed again (the worker must restart and replay)
        self.failure: BaseException | None = None
        super().__init__(*args, **kwargs)

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self._unacked.append(fut)
        return fut

    def put(self, partition: int, key: bytes, value: bytes | None) -> Receipt:
        """Send `key` = `value` (None: delete it) to the changelog partition `partition`; the
        local store gets it once the broker has it."""
        sent = self.send_changelog(partition, key, value, value_serializer="raw")
        receipt = Receipt(sent)
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


def write_states(cache: StateCache, metrics: WorkerMetrics) -> int:
    """Write every dirty agent state into the table at once; count it in the metrics."""
    with _counted(metrics):
        written = cache.flush_to_table()
    metrics.state_writes.inc(written)
    return written


async def write_states_paced(cache: StateCache, metrics: WorkerMetrics, share: float) -> int:
    """Write every dirty agent state into the table, one partition at a time, with at most
    `share` of the loop (`pacing`): a commit's writes (tens of milliseconds at thousands of
    runs a second) never hold the runs consumed meanwhile back in one block."""
    written, pacer = 0, Pacer(share, slice_s=0)
    for partition in cache.partitions_to_write():
        with _counted(metrics):
            count = cache.flush_partitions([partition])
        metrics.state_writes.inc(count)
        written += count
        await pacer.tick()
    cache.flush_done()
    return written


@contextlib.contextmanager
def _counted(metrics: WorkerMetrics) -> Iterator[None]:
    try:
        yield
    except Exception:
        metrics.errors.labels("state_write").inc()
        log.exception("writing agent states to the table failed")
        raise


def guard_commits(
    app: faust.App,
    table: StateTable,
    cache: StateCache,
    metrics: WorkerMetrics,
    in_flight: Callable[[float], Awaitable[int]],
    share: Callable[[], float],
) -> None:
    """Commit offsets only after the changelog holds the states of every run before them.

    Wraps the consumer's offset commit (at_least_once) and the transaction commit
    (exactly_once). faust has chosen the offsets by then, so every run before them is in
    memory: both write the changed states (`write_states_paced`), then wait until every
    changelog record sent so far and every other send the offsets depend on (`in_flight`:
    dead letters, rekeyed runs, the published outputs) is acknowledged. If one failed, the
    commit fails: the runs will be replayed rather than lost. The work takes at most
    `share()` of the loop, decided once per commit (`pacing`; `in_flight` gets it too).
    """
    consumer = app.consumer

    def after_changelog(commit: Commit) -> Commit:
        async def commit_after_changelog(offsets: Any) -> bool:
            paced = share()
            await write_states_paced(cache, metrics, paced)
            await in_flight(paced)
            waited = await table.wait_changelog()
            log.debug("changelog acknowledged before commit", extra={"records": waited})
            # the writes above take a while: partitions revoked meanwhile are not ours to commit
            assigned = consumer.assignment()
            offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
            return bool(offsets) and await commit(offsets)

        return commit_after_changelog

    wrap_offset_commit(consumer, after_changelog)
    transactions = getattr(consumer, "transactions", None)
    if transactions is not None:
        transaction_commit = transactions.commit

        async def commit_transaction_after_changelog(
            offsets: Any, start_new_transaction: bool = True
        ) -> bool:
            paced = share()
            await write_states_paced(cache, metrics, paced)
            await app.producer.flush()
            await in_flight(paced)
            await table.wait_changelog()
            committed = await transaction_commit(
                offsets, start_new_transaction=start_new_transaction
            )
            return bool(committed)

        transactions.commit = commit_transaction_after_changelog
