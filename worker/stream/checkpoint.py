"""Checkpoints: agent states written, and acknowledged by the changelog, before offsets commit.

One table value per agent holds its statistics and its learned run ids, so after a crash a
replayed run is either in the stored state (a duplicate) or not learned at all, provided an
offset is never committed ahead of the state that includes its run. Three pieces keep that:
`CommitHook` writes the dirty states at the start of every commit, `StateTable` remembers
their changelog sends, and `guard_commits` makes the offset commit wait for those sends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from worker.observability.metrics import WorkerMetrics
from worker.stream.faust_internals import Commit, wrap_offset_commit
from worker.stream.state_cache import StateCache

log = logging.getLogger(__name__)


class StateTable(faust.Table[bytes, bytes]):
    """faust's table, remembering the changelog sends it has not seen acknowledged yet.

    faust queues a table write's changelog record in its producer buffer, and the flush that
    precedes an offset commit gives up on that buffer after 100 ms without progress
    (`ProducerBuffer.flush_atmost`) and does not see a record that left the buffer but has
    not reached the Kafka client yet. Under load the offsets could then be committed while
    the state that contains their runs is still unsent; a crash at that moment loses the
    runs. `wait_changelog` waits for the delivery of every record sent so far.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._unacked: list[asyncio.Future[Any]] = []
        super().__init__(*args, **kwargs)

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)
        self._unacked.append(fut)
        return fut

    async def wait_changelog(self) -> int:
        """Wait until the broker acknowledged every changelog record sent so far.

        Raises the send error if one failed: the caller must then not commit offsets."""
        waited = 0
        while self._unacked:
            pending, self._unacked = self._unacked, []
            waited += len(pending)
            results = await asyncio.gather(*pending, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        return waited


class CommitHook(faust.Sensor):
    """Writes dirty agent states into the table before faust commits offsets.

    faust calls `on_commit_initiated` synchronously at the start of every commit (periodic,
    on rebalance, at shutdown); the commit then waits for the changelog (`guard_commits`)
    before committing offsets, so a committed offset never runs ahead of stored state.
    """

    def __init__(self, cache: StateCache, metrics: WorkerMetrics) -> None:
        super().__init__()
        self.cache = cache
        self.metrics = metrics

    def on_commit_initiated(self, consumer: Any) -> Any:
        write_states(self.cache, self.metrics)
        return super().on_commit_initiated(consumer)


def write_states(cache: StateCache, metrics: WorkerMetrics) -> int:
    """Write every dirty agent state into the table; count it in the metrics."""
    try:
        written = cache.flush_to_table()
    except Exception:
        metrics.errors.labels("state_write").inc()
        log.exception("writing agent states to the table failed")
        raise
    if written:
        metrics.state_writes.inc(written)
    return written


def guard_commits(
    app: faust.App, table: StateTable, in_flight: Callable[[], Awaitable[int]]
) -> None:
    """Commit offsets only after the changelog holds every state written before.

    Wraps the consumer's offset commit (at_least_once) and the transaction commit
    (exactly_once): both first wait until every changelog record sent so far (the states
    written by `CommitHook` at the start of this commit) and every other send the offsets
    depend on (`in_flight`: dead letters, rekeyed runs) is acknowledged. If one failed, the
    commit fails: the runs will be replayed rather than lost.
    """
    consumer = app.consumer

    def after_changelog(commit: Commit) -> Commit:
        async def commit_after_changelog(offsets: Any) -> bool:
            await in_flight()
            waited = await table.wait_changelog()
            log.debug("changelog acknowledged before commit", extra={"records": waited})
            return await commit(offsets)

        return commit_after_changelog

    wrap_offset_commit(consumer, after_changelog)
    transactions = getattr(consumer, "transactions", None)
    if transactions is not None:
        transaction_commit = transactions.commit

        async def commit_transaction_after_changelog(
            offsets: Any, start_new_transaction: bool = True
        ) -> bool:
            await app.producer.flush()
            await in_flight()
            await table.wait_changelog()
            committed = await transaction_commit(
                offsets, start_new_transaction=start_new_transaction
            )
            return bool(committed)

        transactions.commit = commit_transaction_after_changelog
