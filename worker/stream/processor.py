"""What happens to one input record: reject, re-route, skip as duplicate, or learn."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, NamedTuple

from worker.errors import RecordError
from worker.learner import LearnerConfig, intake
from worker.learner.evaluation import Learned
from worker.learner.limits import Limits
from worker.stream.publish_queue import PublishQueue
from worker.stream.rekey import partition_for
from worker.stream.state.store import StateStore


class Outcome(StrEnum):
    LEARNED = "learned"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"  # to the DLQ with `reason` and `detail`
    REKEY = "rekey"  # to the agent's home `partition` of the rekey topic


class Result(NamedTuple):
    """One record's outcome (a tuple: cheaper to build than a frozen dataclass, per record)."""

    outcome: Outcome
    agent_id: str | None = None
    reason: str | None = None
    detail: str | None = None
    partition: int | None = None
    #: what learning did (LEARNED only): observations, each call's score, the level flip
    learned: Learned | None = None


class Processor:
    """Pure per-record logic; the record loop does the I/O the result asks for."""

    def __init__(
        self,
        store: StateStore,
        to_publish: PublishQueue,
        config: LearnerConfig,
        limits: Limits,
        partitions: int,
    ) -> None:
        self.store = store
        self.to_publish = to_publish
        self.config = config
        self.limits = limits
        self.partitions = partitions

    def process(self, value: bytes | None, partition: int, event: Any) -> Result:
        """The outcome of one record of `partition`. Called inside faust's context for the
        record's `event`, which makes table reads use that partition's store."""
        try:
            run = intake.decode(value, self.limits)
        except RecordError as exc:
            return Result(Outcome.REJECTED, reason=exc.reason, detail=exc.detail)
        home = partition_for(run.agent_id, self.partitions)
        if home != partition:
            return Result(Outcome.REKEY, agent_id=run.agent_id, partition=home)
        store = self.store
        entry = store.get(run.agent_id, partition)
        try:
            learned = intake.learn_scored(
                store.state(entry), store.run_ids(partition), run, self.config, self.limits
            )
        except RecordError as exc:
            return Result(
                Outcome.REJECTED, agent_id=run.agent_id, reason=exc.reason, detail=exc.detail
            )
        end_ns = run.ended_at if run.ended_at is not None else run.started_at
        if learned is None:  # stored already: nothing learned, nothing scored
            # published again: a crash can come between its commit and its agent's trie
            # (offsets are committed over published tries only, so this is the replay)
            self.to_publish.changed(entry, time.monotonic(), end_ns)
            return Result(Outcome.DUPLICATE, agent_id=run.agent_id)
        store.learned(
            entry, run.id.int, learned.observations, learned.recent_pairs(), learned.models
        )
        self.to_publish.changed(entry, time.monotonic(), end_ns)
        return Result(Outcome.LEARNED, agent_id=run.agent_id, learned=learned)
