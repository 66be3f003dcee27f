"""One partition of the state table as this worker holds it: its learned run ids and owner
token, and the agents with changes not written yet (the partition's write buffer).

A commit writes a partition's buffer whole, in one order (rule 1 of the argument in
docs/operations.md): the deltas, the new snapshots, the partition's run ids, then the
deletions of what the snapshots replaced. So runs learned between two partitions' writes
never reach a partition's run ids before their statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from worker.learner import AgentState, LearnerConfig
from worker.learner.accuracy import Pair
from worker.learner.analysis import CallObservation
from worker.learner.run_ids import id_bytes
from worker.stream.state import agent_records
from worker.stream.state.agent_records import Put
from worker.stream.state.entry import AgentEntry, Unwritten
from worker.stream.state.protocols import Get
from worker.stream.state.run_id_log import PartitionLog


class Record(NamedTuple):
    """One record of a commit: its kind (for the byte counts), key, value (None deletes
    it), and the agent it belongs to (None: the partition's own)."""

    kind: str
    key: bytes
    value: bytes | None
    agent: AgentEntry | None


class PartitionState:
    """The partition's run ids (`log`), and its agents with unwritten runs (`dirty`) or with
    ids the stored run ids lack (`unlogged`), by agent id."""

    def __init__(self, log: PartitionLog) -> None:
        self.log = log
        self.dirty: dict[str, AgentEntry] = {}
        self.unlogged: dict[str, AgentEntry] = {}

    @classmethod
    def load(cls, partition: int, window: int, get: Get) -> PartitionState:
        """The partition's run ids as the table holds them, nothing unwritten."""
        return cls(PartitionLog.load(partition, window, get))

    @property
    def partition(self) -> int:
        return self.log.partition

    @property
    def has_changes(self) -> bool:
        return bool(self.dirty) or self.log.unwritten

    def read(self, agent_id: str, get: Get, config: LearnerConfig) -> AgentEntry:
        """An agent of this partition as the table holds it (`agent_records.read`)."""
        entry = agent_records.read(agent_id, self.partition, self.log, get, config)
        if entry.unlogged:
            self.unlogged[agent_id] = entry
        return entry

    def learned(
        self,
        entry: AgentEntry,
        run_id: int,
        observations: list[CallObservation],
        recent: list[Pair],
        models: list[str | None] | None = None,
    ) -> None:
        """A run (`run_id`, its `observations`, the `recent` accuracy pairs its scored calls
        added, its calls' `models` when the rule set keeps them) was learned into the agent:
        buffer it."""
        unwritten = entry.unwritten
        if unwritten is None:
            unwritten = entry.unwritten = Unwritten()
        unwritten.runs += 1
        unwritten.observations += observations
        unwritten.recent += recent
        if models is not None:
            if unwritten.models is None:  # runs before it kept none: none known for them
                unwritten.models = [None] * (len(unwritten.observations) - len(models))
            unwritten.models += models
        elif unwritten.models is not None:
            unwritten.models += [None] * len(observations)
        if self.log.ids.window:
            unwritten.ids += id_bytes(run_id)
        self.dirty[entry.agent_id] = entry

    def take_records(self) -> tuple[list[Record], list[AgentEntry]]:
        """The partition's records for this commit, in the order above, and the agents they
        write; the buffer is empty afterwards. Every dirty agent is decoded (held)."""
        records: list[Record] = []
        entries = list(self.dirty.values())
        self.dirty = {}
        owner = self.log.owner

        def writer(agent: AgentEntry | None) -> Callable[[str], Put]:
            def kind(name: str) -> Put:
                def put(key: bytes, value: bytes | None) -> None:
                    records.append(Record(name, key, value, agent))

                return put

            return kind

        snapshots = [e for e in entries if not agent_records.write_delta(e, owner, writer(e))]
        replaced = [
            key
            for e in snapshots
            for key in agent_records.write_snapshot(e, _decoded(e), owner, writer(e))
        ]
        self.log.flush(writer(None)("run_ids"))
        delete = writer(None)("tombstone")
        for key in replaced:
            delete(key, None)
        for entry in entries:
            entry.unwritten = None
        return records, entries

    def logged(self) -> list[AgentEntry]:
        """After the run ids were written: the agents whose stored ids they now hold."""
        entries = list(self.unlogged.values())
        self.unlogged = {}
        for entry in entries:
            entry.unlogged = None
        return entries


def _decoded(entry: AgentEntry) -> AgentState:
    state = entry.state
    if state is None:  # never: unwritten runs hold an agent decoded
        raise RuntimeError(f"agent {entry.agent_id!r} has unwritten runs but no state")
    return state
