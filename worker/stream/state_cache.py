"""Agent states in memory (bounded in bytes) and in the state table (written as deltas).

Memory: an agent is kept decoded (an `AgentState`) while it is being learned or published,
and while it is used again within a commit interval (at most `max_decoded` such); the others
are kept serialized (the body of its last snapshot and the deltas written since, as the table
has them: about 2 KB for an agent with a few runs, a tenth of the decoded size), and the least
recently used of those are dropped (they stay in the table) while the estimated total exceeds
`max_bytes`. Agents with unwritten or unpublished changes are never dropped.

The table holds each agent as a snapshot and deltas, and each partition's run ids, written
at each offset commit, a partition at a time (`flush_partitions`, see `checkpoint`), with
only what changed: `worker.stream.agent_store` has the layout and why it keeps every run
exactly once.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from worker.learner import AgentState
from worker.learner.analysis import CallObservation
from worker.learner.run_ids import RunIds, id_bytes
from worker.stream import agent_store
from worker.stream.run_id_log import PartitionLog

log = logging.getLogger(__name__)

#: agents kept decoded at most (those with unwritten or unpublished changes come on top)
MAX_DECODED = 2048
#: estimated memory of an agent besides its state (entry, key, dict slot, publisher digests)
ENTRY_BYTES = 600
#: estimated memory of a decoded state, from the size of its serialized form (measured:
#: 13-21x for a few runs, 4-5x for thousands)
DECODED_BASE_BYTES = 30_000
DECODED_PER_BYTE = 6


#: a queued table write: key, value (None deletes it), the agent it belongs to
_Write = tuple[bytes, bytes | None, "Entry | None"]


def decoded_estimate(serialized: int) -> int:
    return DECODED_BASE_BYTES + DECODED_PER_BYTE * serialized


@dataclass(slots=True, eq=False)
class Entry:
    """One agent: its state (decoded, or serialized while cold), where it stands in the table,
    and what still has to happen to it."""

    agent_id: str
    partition: int
    cache: StateCache
    #: the decoded state (None while cold); its serialized form: the body of its last
    #: snapshot (None when unknown) and the deltas written since, as the table has them
    decoded: AgentState | None = None
    blob: bytes | None = None
    blob_deltas: list[bytes] | None = None
    #: the table's chain: the snapshot's owner token, sequence number and parts, the last
    #: sequence number written, the deltas since the snapshot and their bytes
    owner: int = 0
    upto: int = 0
    parts: int = 0
    snapshot_bytes: int = 0
    seq: int = 0
    deltas: int = 0
    delta_bytes: int = 0
    #: runs learned since the last write: their observations and ids
    pending: list[CallObservation] | None = None
    pending_ids: bytearray | None = None
    pending_runs: int = 0
    #: ids of runs in the state that the partition's stored run ids may lack (a snapshot
    #: carries them until the next write of the run ids)
    unlogged: bytearray | None = None
    #: runs learned and not yet written (the entry is among the cache's dirty ones)
    store_dirty: bool = False
    #: the send of the last record written: the agent stays in memory until it is stored
    receipt: Any = None
    #: monotonic time the oldest unpublished change was consumed, and the newest run's end
    consumed_at: float | None = None
    run_end_ns: int | None = None
    size: int = 0

    @property
    def state(self) -> AgentState:
        """The decoded state (decoded now if the entry was cold)."""
        state = self.decoded
        if state is None:
            state = self.cache.decode(self)
        return state

    @property
    def serialized_size(self) -> int:
        return len(self.blob or b"") + sum(map(len, self.blob_deltas or ()))


class StateCache:
    """Agent states by agent id, backed by the state table (see the module docstring).

    `table` is a `checkpoint.StateTable` (or anything with `get(key)` and
    `put(partition, key, value)`)."""

    def __init__(
        self,
        table: Any,
        max_bytes: int,
        window: int = 100_000,
        max_decoded: int = MAX_DECODED,
    ) -> None:
        self.table = table
        self.max_bytes = max_bytes
        self.window = window
        self.max_decoded = max_decoded
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._decoded: OrderedDict[str, Entry] = OrderedDict()
        #: decoded agents not used again since they were decoded, with the commit count then
        self._probation: dict[str, int] = {}
        self._flushes = 0
        #: by partition, as they are written: agents with runs not yet written, and those
        #: with `unlogged` ids
        self._dirty: dict[int, dict[str, Entry]] = {}
        self._unlogged: dict[int, dict[str, Entry]] = {}
        self._to_publish: dict[str, Entry] = {}
        self._logs: dict[int, PartitionLog] = {}
        self.state_bytes = 0
        #: a walk of `_fit` found nothing it may serialize (the decoded agents) or drop (the
        #: serialized ones): everything pinned. No such walk again until agents get unpinned
        #: (written, taken to publish), or every read of a new agent would walk them all
        #: again (a backlog of 50,000 agents: quadratic)
        self._encode_blocked = self._drop_blocked = False
        #: bytes (key + value) written to the table, by record kind (metrics, benchmarks)
        self.written_bytes: dict[str, int] = {}
        #: the partitions this worker owns now; states of others are never written
        self.owned: Callable[[], set[int]] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def decoded_count(self) -> int:
        return len(self._decoded)

    # --- reading --------------------------------------------------------------------------------

    def run_ids(self, partition: int) -> RunIds:
        """The learned run ids of a partition (read from the table on first use)."""
        return self._log(partition).ids

    def _log(self, partition: int) -> PartitionLog:
        part = self._logs.get(partition)
        if part is None:
            part = self._logs[partition] = PartitionLog.load(partition, self.window, self._get)
        return part

    def get(self, agent_id: str, partition: int) -> Entry:
        """The agent's entry, decoded; read from the table when not cached (inside the
        current record's context, so that the partition's store is the one read)."""
        part = self._log(partition)
        entry = self._entries.get(agent_id)
        if entry is not None:
            self._entries.move_to_end(agent_id)
            if entry.decoded is None:
                self.decode(entry)
            else:
                self._decoded.move_to_end(agent_id)
                self._probation.pop(agent_id, None)  # used again: it stays decoded
            return entry
        entry = self._load(agent_id, partition, part)
        if entry.unlogged:
            self._unlogged.setdefault(partition, {})[agent_id] = entry
        self._entries[agent_id] = entry
        self._decoded[agent_id] = entry
        self._probation[agent_id] = self._flushes
        self._resize(entry, decoded_estimate(entry.snapshot_bytes + entry.delta_bytes))
        self._fit(keep=agent_id)
        return entry

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.get(key)
        return value

    def _load(self, agent_id: str, partition: int, part: PartitionLog) -> Entry:
        entry = Entry(agent_id, partition, self)
        agent_store.read_agent(entry, part, self._get)
        return entry

    def decode(self, entry: Entry) -> AgentState:
        """Make a cold entry decoded again (and count it among the decoded ones)."""
        state = entry.decoded = agent_store.decode(entry)
        if self._entries.get(entry.agent_id) is entry:
            self._decoded[entry.agent_id] = entry
            self._probation[entry.agent_id] = self._flushes
            self._resize(entry, decoded_estimate(entry.serialized_size))
            self._fit(keep=entry.agent_id)
        return state

    # --- learning -------------------------------------------------------------------------------

    def changed(
        self,
        agent_id: str,
        entry: Entry,
        consumed_at: float,
        end_ns: int,
        run_id: int,
        observations: list[CallObservation],
    ) -> None:
        """Record that a run (`run_id`, its `observations`) changed the agent: write it at the
        next commit, publish it."""
        entry.store_dirty = True
        if entry.pending is None:
            entry.pending, entry.pending_ids = [], bytearray()
        entry.pending += observations
        entry.pending_runs += 1
        if self.window:
            entry.pending_ids += id_bytes(run_id)  # type: ignore[operator]
        self._dirty.setdefault(entry.partition, {})[agent_id] = entry
        if entry.consumed_at is None:
            entry.consumed_at = consumed_at
        entry.run_end_ns = end_ns if entry.run_end_ns is None else max(entry.run_end_ns, end_ns)
        self._to_publish[agent_id] = entry

    # --- writing --------------------------------------------------------------------------------

    def flush_to_table(self) -> int:
        """Write every change into the table (and its changelog) at once. Synchronous."""
        written = self.flush_partitions(self.partitions_to_write())
        self.flush_done()
        return written

    def partitions_to_write(self) -> list[int]:
        """The partitions with changes not written yet."""
        partitions = set(self._dirty)
        partitions.update(p for p, part in self._logs.items() if part.unwritten)
        return sorted(partitions)

    def flush_partitions(self, partitions: Iterable[int]) -> int:
        """Write the changes of `partitions` into the table (and its changelog). Synchronous.

        Each partition's records are whole in one call: the deltas, the new snapshots, the run
        ids, then the deletions of what the snapshots replaced. So runs learned between two
        calls never reach a partition's run ids before their statistics. The partitions'
        records are sent interleaved, one of each in turn: the Kafka client sends one batch
        per partition at a time, so a commit's records of one partition after the other
        would wait for one round trip per batch. Returns the number of records written."""
        wanted = set(partitions)
        owned = self.owned() if self.owned is not None else None
        by_partition: dict[int, list[Entry]] = {}
        for partition in wanted:
            dirty = self._dirty.pop(partition, None)
            if not dirty:
                continue
            if owned is not None and partition not in owned:
                for agent_id, entry in dirty.items():
                    log.warning("not writing state of %s: partition no longer owned", agent_id)
                    self._clean(entry)
                continue
            by_partition[partition] = list(dirty.values())
        queues: list[tuple[int, list[_Write]]] = []
        for partition in sorted(wanted):
            part = self._logs.get(partition)
            if part is None:
                continue
            entries = by_partition.pop(partition, [])
            if not entries and not part.unwritten:
                continue
            if owned is not None and partition not in owned:
                continue
            queue: list[_Write] = []
            snapshots = [
                e for e in entries if not agent_store.write_delta(e, part, self._into(queue, e))
            ]
            deletions = [
                key
                for e in snapshots
                for key in agent_store.write_snapshot(e, part, self._into(queue, e))
            ]
            part.flush(self._into(queue, None)("run_ids"))
            delete = self._into(queue, None)("tombstone")
            for key in deletions:
                delete(key, None)
            queues.append((partition, queue))
            for entry in entries:
                self._clean(entry)
                if entry.decoded is not None:
                    self._resize(entry, decoded_estimate(entry.snapshot_bytes + entry.delta_bytes))
        for entries in by_partition.values():  # never read there: nothing to write
            for entry in entries:
                self._clean(entry)
        written = self._send(queues)
        for partition in wanted:  # their run ids were just written, after their agents' records
            for entry in self._unlogged.pop(partition, {}).values():
                entry.unlogged = None
        return written

    def flush_done(self) -> None:
        """After a commit's writes: agents unpinned by them may be serialized or dropped."""
        self._flushes += 1
        self._may_fit_again()
        self._cool_unused()
        self._fit()

    def _into(self, queue: list[_Write], entry: Entry | None) -> agent_store.Writer:
        """A writer (by record kind) that queues the records of one partition, in order."""
        counts = self.written_bytes

        def writer(kind: str) -> Callable[[bytes, bytes | None], None]:
            def write(key: bytes, value: bytes | None) -> None:
                counts[kind] = counts.get(kind, 0) + len(key) + (len(value) if value else 0)
                queue.append((key, value, entry))

            return write

        return writer

    def _send(self, queues: list[tuple[int, list[_Write]]]) -> int:
        """Send the queued records, one of each partition in turn (each partition's in
        order); an agent's `receipt` is that of its last record."""
        put, sent = self.table.put, 0
        for records in itertools.zip_longest(*(queue for _, queue in queues)):
            for (partition, _), record in zip(queues, records, strict=True):
                if record is not None:
                    key, value, entry = record
                    receipt = put(partition, key, value)
                    if entry is not None:
                        entry.receipt = receipt
                    sent += 1
        return sent

    def _clean(self, entry: Entry) -> None:
        entry.store_dirty = False
        entry.pending = entry.pending_ids = None
        entry.pending_runs = 0

    # --- publishing -----------------------------------------------------------------------------

    def take_to_publish(self) -> list[tuple[str, Entry]]:
        """Agents changed since the last call (the coalesced publish batch)."""
        batch = list(self._to_publish.items())
        self._to_publish.clear()
        self._may_fit_again()
        return batch

    # --- memory ---------------------------------------------------------------------------------

    def keep_partitions(self, partitions: Iterable[int]) -> int:
        """Forget agents (and run ids) of partitions this worker no longer owns; returns how
        many agents."""
        keep = set(partitions)
        for partition in [p for p in self._dirty if p not in keep]:
            for agent_id in self._dirty.pop(partition):
                log.warning("dropping unwritten state of revoked agent %s", agent_id)
        for partition in [p for p in self._unlogged if p not in keep]:
            del self._unlogged[partition]
        gone = [a for a, e in self._entries.items() if e.partition not in keep]
        for agent_id in gone:
            entry = self._entries.pop(agent_id)
            self._decoded.pop(agent_id, None)
            self._probation.pop(agent_id, None)
            self._to_publish.pop(agent_id, None)
            self.state_bytes -= entry.size
        for partition in [p for p in self._logs if p not in keep]:
            del self._logs[partition]
        return len(gone)

    def _resize(self, entry: Entry, state_bytes: int) -> None:
        size = ENTRY_BYTES + state_bytes
        self.state_bytes += size - entry.size
        entry.size = size

    def _pinned(self, agent_id: str, entry: Entry) -> bool:
        """Not to be serialized or dropped: changes not written or not published yet,
        written but not in the local store yet (a read from there would miss them), or
        holding run ids that only its records have (a read would not know them as such)."""
        receipt = entry.receipt
        return (
            entry.store_dirty
            or agent_id in self._to_publish
            or entry.unlogged is not None
            or (receipt is not None and not receipt.applied)
        )

    def _may_fit_again(self) -> None:
        """Agents may have been unpinned (written, taken to publish): `_fit` walks again."""
        self._encode_blocked = self._drop_blocked = False

    def fit(self) -> None:
        """Serialize and drop agents now until within the bounds (also done on every read)."""
        self._may_fit_again()
        self._fit()

    def _fit(self, keep: str | None = None) -> None:
        """Keep at most `max_decoded` agents decoded and the estimate within `max_bytes`:
        first serialize decoded agents, then drop serialized ones, least recently used first.
        Pinned agents stay, and so does `keep` (in use); they are moved to the recent end as
        they are passed, so that the next call does not walk over them again. A walk that
        passes everything blocks further walks until agents get unpinned."""
        decoded, entries, pinned = self._decoded, self._entries, self._pinned
        passed = 0
        while not self._encode_blocked and (
            len(decoded) > self.max_decoded or self.state_bytes > self.max_bytes
        ):
            if passed >= len(decoded):
                self._encode_blocked = True
                break
            agent_id, entry = next(iter(decoded.items()))
            if agent_id == keep or pinned(agent_id, entry):
                decoded.move_to_end(agent_id)
                passed += 1
                continue
            del decoded[agent_id]
            self._probation.pop(agent_id, None)
            self._encode(entry)
        passed = 0
        while not self._drop_blocked and self.state_bytes > self.max_bytes:
            if passed >= len(entries):
                self._drop_blocked = True
                break
            agent_id, entry = next(iter(entries.items()))
            if entry.decoded is not None or pinned(agent_id, entry):
                entries.move_to_end(agent_id)
                passed += 1
                continue
            del entries[agent_id]
            self.state_bytes -= entry.size

    def _cool_unused(self) -> None:
        """Serialize the agents decoded for one use and not used again for a whole commit
        interval (a fleet of agents with a few runs each would otherwise keep thousands
        decoded, for nothing: memory, and time the garbage collector spends walking them)."""
        due = self._flushes - 2
        cooled = []
        for agent_id, since in self._probation.items():
            if since > due:
                break  # in decoding order: the rest are younger
            entry = self._entries.get(agent_id)
            if entry is None or entry.decoded is None:
                cooled.append(agent_id)
            elif not self._pinned(agent_id, entry):
                del self._decoded[agent_id]
                self._encode(entry)
                cooled.append(agent_id)
        for agent_id in cooled:
            del self._probation[agent_id]

    def _encode(self, entry: Entry) -> None:
        """Keep the entry serialized only: its snapshot body and deltas when known (nothing
        to encode), else its state encoded now."""
        if entry.blob is None:
            assert entry.decoded is not None
            entry.blob, entry.blob_deltas = entry.decoded.to_bytes(), None
        entry.decoded = None
        self._resize(entry, entry.serialized_size)
