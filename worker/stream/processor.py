"""What happens to one input record: reject, re-route, skip as duplicate, or learn."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import murmur2

from worker.learner import LearnerConfig
from worker.records import RecordError, RunRecord, parse_run
from worker.settings import LimitSettings
from worker.stream.limits import check_nodes, check_run, check_size
from worker.stream.state import StateCache


def partition_for(agent_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for key `agent_id` (murmur2)."""
    return (murmur2(agent_id.encode()) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Result:
    """`kind` is learned | duplicate | rejected | rekey."""

    kind: str
    agent_id: str | None = None
    reason: str | None = None
    detail: str | None = None
    partition: int | None = None  # rekey: where the agent's state lives


class Processor:
    """Pure per-record logic; the faust agent does the I/O the result asks for."""

    def __init__(
        self,
        cache: StateCache,
        config: LearnerConfig,
        limits: LimitSettings,
        partitions: int,
    ) -> None:
        self.cache = cache
        self.config = config
        self.limits = limits
        self.partitions = partitions

    def process(self, value: bytes | None, partition: int, event: Any) -> Result:
        try:
            check_size(value, self.limits)
            assert value is not None
            run = parse_run(value)
            check_run(run, self.limits)
        except RecordError as exc:
            return Result("rejected", reason=exc.reason, detail=exc.detail)
        home = partition_for(run.agent_id, self.partitions)
        if home != partition:
            return Result("rekey", agent_id=run.agent_id, partition=home)
        return self.learn(run, partition, event)

    def learn(self, run: RunRecord, partition: int, event: Any) -> Result:
        entry = self.cache.get(run.agent_id, partition)
        if entry.state.has_run(run.id):
            self.cache.rewrite(entry, event)  # see StateCache.rewrite
            return Result("duplicate", agent_id=run.agent_id)
        try:
            check_nodes(entry.state, run, self.limits)
        except RecordError as exc:
            return Result("rejected", agent_id=run.agent_id, reason=exc.reason, detail=exc.detail)
        if not entry.state.learn(run, self.config):
            return Result("duplicate", agent_id=run.agent_id)
        end_ns = run.ended_at if run.ended_at is not None else run.started_at
        self.cache.changed(run.agent_id, entry, event, time.monotonic(), end_ns)
        return Result("learned", agent_id=run.agent_id)
