"""Rebalances, in one place: what this worker owns, and what happens when that changes.

A state of a partition this worker no longer owns must never be written again: a stale
write after the new owner's would lose that owner's runs. So on revocation everything
learned is stored (a checkpoint without the offset commit: states written, the changelog
awaited, outputs published), then the agents are forgotten (re-read from the table if the
partition comes back); the new owner replays from the last commit, duplicates skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.stream.checkpoint import Checkpoint
from worker.stream.dead_letter import DeadLetters
from worker.stream.offsets import Offsets
from worker.stream.publish_queue import PublishQueue
from worker.stream.publisher import Publisher
from worker.stream.state.store import StateStore

log = logging.getLogger(__name__)


class Rebalances:
    """faust's rebalance signals: the partitions of the runs topic this worker owns."""

    def __init__(
        self,
        runs_topic: str,
        source_topics: set[str],
        store: StateStore,
        to_publish: PublishQueue,
        checkpoint: Checkpoint,
        offsets: Offsets,
        dead_letters: DeadLetters,
        publisher: Publisher,
    ) -> None:
        self.runs_topic = runs_topic
        self.source_topics = source_topics
        self.store = store
        self.to_publish = to_publish
        self.checkpoint = checkpoint
        self.offsets = offsets
        self.dead_letters = dead_letters
        self.publisher = publisher
        #: partitions of the runs topic this worker owns (between assignment and revocation)
        self.owned: set[int] = set()
        #: assigned partitions recovered (tables restored): the worker is ready
        self.recovered = False

    def connect(self, app: Any) -> None:
        app.on_partitions_revoked.connect(self.on_revoked)
        app.on_partitions_assigned.connect(self.on_assigned)
        app.on_rebalance_complete.connect(self.on_complete)

    async def on_revoked(self, app: Any, revoked: set[Any], **_: Any) -> None:
        """Before the partitions go to another worker: store what was learned, then forget it.

        faust has stopped the agent and waited for in-flight records here, but it does not
        commit offsets on revocation, so the new owner replays from the last commit. Storing
        the states now (and waiting for the changelog) lets it find those runs learned.
        """
        self.recovered = False
        lost = {tp.partition for tp in revoked if tp.topic in self.source_topics}
        written = await self.checkpoint.flush()
        self._own(self.owned - lost)
        log.info(
            "partitions revoked: states written, cache dropped",
            extra={"partitions": sorted(lost), "written": written},
        )

    async def on_assigned(self, app: Any, assigned: set[Any], **_: Any) -> None:
        self._own({tp.partition for tp in assigned if tp.topic == self.runs_topic})
        self.dead_letters.assigned(self.owned)
        self.offsets.keep((tp.topic, tp.partition) for tp in assigned)

    async def on_complete(self, app: Any, **_: Any) -> None:
        self.recovered = True
        assigned = sorted(
            tp.partition for tp in app.consumer.assignment() if tp.topic == self.runs_topic
        )
        log.info("partitions recovered, processing", extra={"partitions": assigned})

    def _own(self, partitions: set[int]) -> None:
        """Own exactly `partitions`: forget the agents of the others, and what was last
        published (re-publishing is harmless; their new owner publishes them)."""
        self.owned = partitions
        forgotten = self.store.keep(partitions)
        self.to_publish.forget(forgotten)
        self.publisher.forget()
        self.checkpoint.reset()
        if forgotten:
            log.info("forgot %d agents of revoked partitions", len(forgotten))
