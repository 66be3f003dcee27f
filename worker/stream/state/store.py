"""The worker's agent states: read from the state table, learned into, written back at each
commit, a partition at a time, and forgotten when their partition leaves.

The parts: `AgentCache` (memory, bounded in bytes), one `PartitionState` per partition (its
run ids and its write buffer), `agent_records` (an agent's snapshot and deltas). Which
partitions this worker owns is set by `worker.stream.rebalance` (`keep`); a partition it no
longer owns is never written again (rule 3 of the argument in docs/operations.md).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

from worker.learner import AgentState, LearnerConfig
from worker.learner.accuracy import Pair
from worker.learner.analysis import CallObservation
from worker.learner.run_ids import RunIds
from worker.stream.state.cache import MAX_DECODED, AgentCache
from worker.stream.state.entry import AgentEntry, Hold
from worker.stream.state.partition import PartitionState, Record
from worker.stream.state.protocols import Table

log = logging.getLogger(__name__)


class StateStore:
    """Agent states by agent id over the state `table` (see the module docstring)."""

    def __init__(
        self,
        table: Table,
        max_bytes: int,
        window: int = 100_000,
        max_decoded: int = MAX_DECODED,
        config: LearnerConfig | None = None,
    ) -> None:
        self.table = table
        self.window = window
        #: the learning rules: stored deltas are folded under them when an agent is read
        self.config = config or LearnerConfig()
        self.cache = AgentCache(max_bytes, max_decoded, self.config)
        self._partitions: dict[int, PartitionState] = {}
        #: the partitions this worker owns (None until the first assignment: all of them)
        self._owned: set[int] | None = None
        #: bytes (key + value) written to the table, by record kind (metrics, benchmarks)
        self.written_bytes: dict[str, int] = {}
        #: agents with learned runs read back from the table (not cached, or no longer)
        self.table_reads = 0

    def __len__(self) -> int:
        return len(self.cache)

    # --- reading and learning ---------------------------------------------------------------

    def partition(self, partition: int) -> PartitionState:
        """The partition's state (its run ids read from the table on first use)."""
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = PartitionState.load(
                partition, self.window, self.table.get
            )
        return part

    def run_ids(self, partition: int) -> RunIds:
        """The learned run ids of a partition."""
        return self.partition(partition).log.ids

    def get(self, agent_id: str, partition: int) -> AgentEntry:
        """The agent's entry, decoded; read from the table when not cached (inside the
        current record's context, so that the partition's store is the one read)."""
        part = self.partition(partition)
        cache = self.cache
        entry = cache.get(agent_id)
        if entry is not None:
            cache.state(entry)
            return entry
        entry = part.read(agent_id, self.table.get, self.config)
        if entry.state is not None and entry.state.runs:
            self.table_reads += 1
        cache.fit()  # room first: the new entry is not serialized before it is used
        cache.add(entry)
        if entry.unlogged:
            cache.hold(entry, Hold.UNLOGGED)
        return entry

    def state(self, entry: AgentEntry) -> AgentState:
        """The entry's decoded state (decoded now if it was cold)."""
        return self.cache.state(entry)

    def learned(
        self,
        entry: AgentEntry,
        run_id: int,
        observations: list[CallObservation],
        recent: list[Pair],
        models: list[str | None] | None = None,
    ) -> None:
        """A run (`run_id`, its `observations`, the `recent` accuracy pairs it added, its
        calls' `models` under the adaptive rule set) changed the agent: written at the next
        commit."""
        self.cache.hold(entry, Hold.UNWRITTEN)
        self.partition(entry.partition).learned(entry, run_id, observations, recent, models)

    # --- writing ----------------------------------------------------------------------------

    def partitions_to_write(self) -> list[int]:
        """The partitions with changes not written yet."""
        return sorted(p for p, part in self._partitions.items() if part.has_changes)

    def write(self, partitions: Iterable[int]) -> int:
        """Send the changes of `partitions` to the table, each partition's records whole and
        in order; returns how many records.

        The partitions' records are sent interleaved, one of each in turn: the Kafka client
        sends one batch per partition at a time, so a commit's records of one partition
        after the other would wait for one round trip per batch."""
        queues: list[tuple[int, list[Record]]] = []
        cache = self.cache
        for number in sorted(set(partitions)):
            part = self._partitions.get(number)
            if part is None or not part.has_changes:
                continue
            if self._owned is not None and number not in self._owned:
                for entry in part.dirty.values():
                    log.warning(
                        "not writing state of %s: partition no longer owned", entry.agent_id
                    )
                    entry.unwritten = None
                    cache.release(entry, Hold.UNWRITTEN)
                part.dirty = {}
                continue
            records, entries = part.take_records()
            queues.append((number, records))
            cache.written(entries)
            for entry in entries:
                cache.release(entry, Hold.UNWRITTEN)
            for entry in part.logged():
                cache.release(entry, Hold.UNLOGGED)
        return self._send(queues)

    def write_all(self) -> int:
        """Send every change to the table at once (rebalances, shutdown)."""
        written = self.write(self.partitions_to_write())
        self.committed()
        return written

    def committed(self) -> None:
        """After a commit's writes: agents unused for a while are serialized, and room made."""
        self.cache.committed()

    def acknowledged(self) -> None:
        """After the changelog acknowledged the writes: the agents they hold may leave, and
        room is made (a commit's agents would otherwise stay decoded until the next one, on
        top of `max_decoded`)."""
        self.cache.release_applied()
        self.cache.fit()

    def _send(self, queues: list[tuple[int, list[Record]]]) -> int:
        put, counts, sent = self.table.put, self.written_bytes, 0
        for records in itertools.zip_longest(*(queue for _, queue in queues)):
            for (partition, _), record in zip(queues, records, strict=True):
                if record is None:
                    continue
                kind, key, value, agent = record
                counts[kind] = counts.get(kind, 0) + len(key) + (len(value) if value else 0)
                receipt = put(partition, key, value)
                if agent is not None:
                    agent.last_write = receipt
                sent += 1
        return sent

    # --- ownership --------------------------------------------------------------------------

    def keep(self, partitions: Iterable[int]) -> list[AgentEntry]:
        """Own exactly `partitions` from now on: forget the agents and run ids of the others
        (re-read from the table if they come back). Returns the agents forgotten."""
        self._owned = owned = set(partitions)
        for number in [p for p in self._partitions if p not in owned]:
            for agent_id in self._partitions.pop(number).dirty:
                log.warning("dropping unwritten state of revoked agent %s", agent_id)
        return self.cache.drop(owned)

    # --- figures ----------------------------------------------------------------------------

    @property
    def state_bytes(self) -> int:
        return self.cache.state_bytes

    @property
    def decoded_count(self) -> int:
        return self.cache.decoded_count

    @property
    def decodes(self) -> dict[str, int]:
        """States decoded for a run or a publish, by where from: the cache's serialized copy
        ("cache") or the table ("table")."""
        return {"cache": self.cache.decodes, "table": self.table_reads}
