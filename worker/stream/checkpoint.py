"""The offset commit, and everything that must happen before it, in one place.

A run's statistics and its id are stored in one record, so after a crash a replayed run is
either in the stored state (skipped as a duplicate) or not learned at all, provided an offset
is never committed ahead of the records that hold its run (docs/operations.md, "Exactly
once: the argument"). `Checkpoint.commit` is that order, step by step; it runs once faust has
chosen the offsets, so every run before them is in memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol

from worker.observability.metrics import WorkerMetrics
from worker.stream.faust_internals import Commit, wrap_offset_commit
from worker.stream.pacing import Pacer
from worker.stream.pending_sends import PendingSends
from worker.stream.publisher import Publisher
from worker.stream.state.store import StateStore
from worker.stream.state.table import StateTable

log = logging.getLogger(__name__)


class Assignment(Protocol):
    """The consumer, as far as a commit needs it."""

    def assignment(self) -> set[Any]: ...


class Checkpoint:
    """Writes what was learned, waits for everything the offsets depend on, then commits."""

    def __init__(
        self,
        store: StateStore,
        table: StateTable,
        sends: PendingSends,
        publisher: Publisher,
        metrics: WorkerMetrics,
    ) -> None:
        self.store = store
        self.table = table
        self.sends = sends
        self.publisher = publisher
        self.metrics = metrics

    async def commit(
        self,
        offsets: Mapping[Any, int],
        consumer: Assignment,
        commit_offsets: Commit,
        share: float,
    ) -> bool:
        """Commit `offsets` once everything before them is stored; the background work
        (state writes, trie builds) takes at most `share` of the loop (`pacing`)."""
        await self.flush(share)
        # 5. the offsets of the partitions still ours (the steps above take a while)
        assigned = consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        return bool(mine) and await commit_offsets(mine)

    async def flush(self, share: float = 1.0) -> int:
        """Steps 1-4 of a commit: after it, every run learned so far is stored and its
        outputs published. Rebalances and shutdown run it at full speed. Raises when a send
        failed: then no offset may be committed again (the runs will be replayed)."""
        # 1. the states of every agent learned since the last commit, one partition at a time
        written = await self._write_states(share)
        # 2. the dead letters and rekeyed runs sent so far, acknowledged
        await self.sends.wait()
        # 3. the hints and tries of every run learned so far, published: otherwise a crash
        #    right after the commit leaves those agents' outputs behind until their next run
        #    (the replay skips their runs as learned)
        await self.publisher.publish_pending(share)
        # 4. every state record of step 1 acknowledged by the changelog
        acknowledged = await self.table.wait_changelog()
        self.store.acknowledged()
        log.debug("changelog acknowledged", extra={"written": written, "acked": acknowledged})
        return written

    async def _write_states(self, share: float) -> int:
        """Each partition's records whole, with at most `share` of the loop between them."""
        written, pacer = 0, Pacer(share, slice_s=0)
        for partition in self.store.partitions_to_write():
            with self._counted():
                count = self.store.write([partition])
            self.metrics.state_writes.inc(count)
            written += count
            await pacer.tick()
        self.store.committed()
        return written

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        try:
            yield
        except Exception:
            self.metrics.errors.labels("state_write").inc()
            log.exception("writing agent states to the table failed")
            raise

    def install(self, app: Any, share: Callable[[], float]) -> None:
        """Make faust's offset commits go through `commit`: the consumer's (at_least_once)
        and the transaction's (exactly_once). `share()` is decided once per commit."""
        consumer = app.consumer

        def through_checkpoint(commit: Commit) -> Commit:
            async def commit_after_checkpoint(offsets: Any) -> bool:
                return await self.commit(offsets, consumer, commit, share())

            return commit_after_checkpoint

        wrap_offset_commit(consumer, through_checkpoint)
        transactions = getattr(consumer, "transactions", None)
        if transactions is None:
            return
        transaction_commit: Callable[..., Awaitable[bool]] = transactions.commit

        async def commit_transaction_after_checkpoint(
            offsets: Any, start_new_transaction: bool = True
        ) -> bool:
            await self.flush(share())
            await app.producer.flush()
            committed = await transaction_commit(
                offsets, start_new_transaction=start_new_transaction
            )
            return bool(committed)

        transactions.commit = commit_transaction_after_checkpoint
