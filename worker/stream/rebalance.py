"""Rebalances: store what was learned before partitions leave, forget it, start clean.

A state of a partition this worker no longer owns must never be written again: a stale write
after the new owner's would lose that owner's runs. So on revocation the states are written
and the changelog awaited, then the agents are forgotten (re-read from the table if the
partition comes back); the new owner replays from the last commit, duplicates skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.observability.metrics import WorkerMetrics
from worker.stream.checkpoint import StateTable, write_states
from worker.stream.dead_letter import DeadLetters
from worker.stream.offsets import Offsets
from worker.stream.pending_sends import PendingSends
from worker.stream.publisher import Publisher
from worker.stream.state_cache import StateCache

log = logging.getLogger(__name__)


class Rebalances:
    """faust's rebalance signals, and which partitions of the runs topic this worker owns."""

    def __init__(
        self,
        runs_topic: str,
        source_topics: set[str],
        cache: StateCache,
        table: StateTable,
        offsets: Offsets,
        sends: PendingSends,
        metrics: WorkerMetrics,
    ) -> None:
        self.runs_topic = runs_topic
        self.source_topics = source_topics
        self.cache = cache
        self.table = table
        self.offsets = offsets
        self.sends = sends
        self.metrics = metrics
        #: set once the outputs are started (after the first assignment may have begun)
        self.publisher: Publisher | None = None
        self.dead_letters: DeadLetters | None = None
        #: partitions of the runs topic this worker owns (between assignment and revocation)
        self.owned: set[int] = set()
        #: assigned partitions recovered (tables restored): the worker is ready
        self.recovered = False
        cache.owned = lambda: self.owned

    def connect(self, app: Any) -> None:
        app.on_partitions_revoked.connect(self.on_revoked)
        app.on_partitions_assigned.connect(self.on_assigned)
        app.on_rebalance_complete.connect(self.on_complete)

    async def on_revoked(self, app: Any, revoked: set[Any], **_: Any) -> None:
        """Before the partitions go to another worker: store what was learned, then forget it.

        faust has stopped the agent and waited for in-flight records here, but it does not
        commit offsets on revocation, so the new owner replays from the last commit. Writing
        the states now (and waiting for the changelog) lets it find those runs learned.
        """
        self.recovered = False
        lost = {tp.partition for tp in revoked if tp.topic in self.source_topics}
        written = write_states(self.cache, self.metrics)
        await self.table.wait_changelog()
        await self.sends.wait()  # the new owner reads the DLQ marks these may set
        if self.publisher is not None:
            await self.publisher.publish_pending()
        self.owned -= lost
        dropped = self.cache.keep_partitions(self.owned)
        if self.publisher is not None:
            self.publisher.forget()
        log.info(
            "partitions revoked: states written, cache dropped",
            extra={"partitions": sorted(lost), "written": written, "forgotten": dropped},
        )

    async def on_assigned(self, app: Any, assigned: set[Any], **_: Any) -> None:
        self.owned = {tp.partition for tp in assigned if tp.topic == self.runs_topic}
        if self.dead_letters is not None:
            self.dead_letters.assigned(self.owned)
        self.offsets.keep((tp.topic, tp.partition) for tp in assigned)
        dropped = self.cache.keep_partitions(self.owned)
        if dropped:
            log.info("forgot %d agents of revoked partitions", dropped)
        if self.publisher is not None:
            self.publisher.forget()

    async def on_complete(self, app: Any, **_: Any) -> None:
        self.recovered = True
        assigned = sorted(
            tp.partition for tp in app.consumer.assignment() if tp.topic == self.runs_topic
        )
        log.info("partitions recovered, processing", extra={"partitions": assigned})
