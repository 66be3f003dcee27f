"""The offset commit, and everything that must happen before it, in one place.

A run's statistics and its id are stored in one record, so after a crash a replayed run is
either in the stored state (skipped as a duplicate, its agent published again) or not
learned at all, provided an offset is never committed ahead of the records that hold its
run (docs/operations.md, "Exactly once: the argument"). `Checkpoint.commit` is that order,
step by step; it runs once faust has chosen the offsets, so every run before them is in
memory. Offsets are also committed only over runs whose tries are out (`Publisher.covered`,
one tries cycle every `tries_interval_s`): what faust asked for waits here until then, and
`catch_up` commits it when the next tries cycle is done, whether or not records keep coming.
"""

from __future__ import annotations

import asyncio
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
        #: per partition: the offset faust last asked to commit, and the offset committed
        self._wanted: dict[Any, int] = {}
        self._committed: dict[Any, int] = {}
        self._lock = asyncio.Lock()  # one commit at a time (faust's, `catch_up`)
        self._consumer: Assignment | None = None
        self._commit_offsets: Commit | None = None

    async def commit(
        self,
        offsets: Mapping[Any, int],
        consumer: Assignment,
        commit_offsets: Commit,
        share: float,
        stopping: bool = False,
    ) -> bool:
        """Commit `offsets`, as far as every run before them is stored and published; the
        background work (state writes, trie builds) takes at most `share` of the loop
        (`pacing`). When `stopping`, tries are published first, so all of it is committed."""
        async with self._lock:
            await self.flush(share, tries=stopping)
            self._wanted.update(offsets)
            # 5. the offsets of the partitions still ours, as far as their tries are out
            return await self._commit_covered(consumer, commit_offsets)

    async def catch_up(self) -> bool:
        """Commit what faust asked for and a tries cycle has covered since (also when no
        record came since faust's last commit)."""
        consumer, commit_offsets = self._consumer, self._commit_offsets
        if consumer is None or commit_offsets is None:
            return False
        async with self._lock:
            return await self._commit_covered(consumer, commit_offsets)

    async def _commit_covered(self, consumer: Assignment, commit_offsets: Commit) -> bool:
        if self.publisher.producer_lost is not None:  # hints may be missing: replay them
            return False
        covered = self.publisher.covered
        assigned = consumer.assignment()
        offsets = {}
        for tp, wanted in self._wanted.items():
            mark = covered.get((tp.topic, tp.partition))
            if tp in assigned and mark is not None:
                offset = min(wanted, mark)
                if offset > self._committed.get(tp, -1):
                    offsets[tp] = offset
        if not offsets:
            return False
        committed = await commit_offsets(offsets)
        if committed:
            self._committed.update(offsets)
        return bool(committed)

    def reset(self) -> None:
        """After a rebalance: faust seeks every partition to its committed offset again."""
        self._wanted.clear()
        self._committed.clear()

    async def flush(self, share: float = 1.0, tries: bool = True) -> int:
        """Steps 1-4 of a commit: after it, every run learned so far is stored and its hints
        published (and its trie, with `tries`: rebalances and shutdown, at full speed).
        Raises when a send failed: then no offset may be committed again (the runs will be
        replayed)."""
        # 1. the states of every agent learned since the last commit, one partition at a time
        written = await self._write_states(share)
        # 2. the dead letters and rekeyed runs sent so far, acknowledged
        await self.sends.wait()
        # 3. the hints of every run learned so far published (and its trie, with `tries`;
        #    otherwise `covered` holds the offsets back until a tries cycle has it)
        if tries:
            await self.publisher.publish_pending(share)
        else:
            await self.publisher.publish_hints()
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
            await self.table.send_batches()  # on their way while the next is written
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
        and the transaction's (exactly_once, which publishes tries at every commit and
        commits faust's offsets as they are). `share()` is decided once per commit."""
        consumer = app.consumer

        def through_checkpoint(commit: Commit) -> Commit:
            self._consumer, self._commit_offsets = consumer, commit

            async def commit_after_checkpoint(offsets: Any) -> bool:
                stopping = bool(consumer.should_stop)
                return await self.commit(offsets, consumer, commit, share(), stopping)

            return commit_after_checkpoint

        wrap_offset_commit(consumer, through_checkpoint)
        transactions = getattr(consumer, "transactions", None)
        if transactions is None:
            return
        transaction_commit: Callable[..., Awaitable[bool]] = transactions.commit

        async def commit_transaction_after_checkpoint(
            offsets: Any, start_new_transaction: bool = True
        ) -> bool:
            async with self._lock:
                await self.flush(share())
                await app.producer.flush()
                committed = await transaction_commit(
                    offsets, start_new_transaction=start_new_transaction
                )
            return bool(committed)

        transactions.commit = commit_transaction_after_checkpoint
