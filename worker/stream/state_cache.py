"""Agent states in memory (bounded in bytes) and in the state table (written as deltas).

Memory: an agent is kept decoded (an `AgentState`) only while it is being learned or
published, at most `max_decoded` of them; the others are kept as their serialized bytes
(about 2 KB for an agent with a few runs, a tenth of the decoded size), and the least recently
used of those are dropped (they stay in the table) while the estimated total exceeds
`max_bytes`. Agents with unwritten changes or waiting to be published are never dropped.

The table (RocksDB and its compacted changelog), written at the start of each offset commit
(`flush_to_table`, see `checkpoint`), only with what changed:

- per agent, a *snapshot* (its statistics) at the agent's key, tagged with the *owner* token
  of the worker that wrote it and a sequence number `upto`; then *deltas* keyed
  `(agent, seq)` for seq = upto+1, upto+2, ...: the observations and ids of the runs one
  commit learned. An agent's stored state is its snapshot plus the unbroken run of deltas
  that follow it with the snapshot's owner token. A worker writes deltas only on a snapshot
  it wrote itself since it took the partition over (its token); otherwise its first write of
  the agent is a new snapshot with its token. Once the deltas outweigh the snapshot (or
  number `MAX_DELTAS`), a new snapshot replaces them, so an agent costs about twice the
  bytes of its deltas, and no record grows without bound (large snapshots go in parts);
- per partition, the learned run ids (`worker.stream.run_id_log`).

Per partition, each commit writes: the deltas, the new snapshots, the run ids, then the
deletions of what the snapshots replaced.

Why a run is never lost or counted twice, whatever the crash point:

0. Every reader sees a prefix of the changelog. Kafka keeps one partition's records in the
   order they were sent, every record of an agent and of its partition's run ids goes to
   the same partition, and the local RocksDB takes a record only once the broker has it
   (`checkpoint.StateTable.put`): this worker after a restart, another worker and a rebuilt
   disk all read a prefix of what was sent. The offsets committed cover only runs whose
   records the broker acknowledged (`checkpoint`); runs after them are read again.
1. A run's statistics and its id are in the same record: its delta, or the snapshot that
   adds it (which carries the ids of the runs it adds, and of stored runs whose ids the
   partition's run ids may lack). The partition's run ids are written after the agents'
   records, so they never name a run whose statistics a prefix lacks; a snapshot that folds
   deltas away is written after the run ids that took their ids, or carries them. So a prefix
   holds a run's statistics exactly when it holds its id, and a run read again is skipped
   exactly when it was stored.
2. A snapshot is read with only the deltas of its own owner that continue its sequence, so
   records that another worker wrote on an older snapshot (before this one replaced it) are
   never mixed in; a worker's first write of an agent is a snapshot of all it read, so the
   chain a worker extends is always its own.
3. Every committed run's records were acknowledged before the commit, and whatever replaces
   them later (a snapshot) is written by a worker that read them (rule 0) and contains them.
4. The run ids of a partition keep the last `window` ids: those read from stored agent
   records are added to the window when the agent is read, before any snapshot drops them.
5. An agent whose records are not yet in the local store stays in memory until they are, so
   it is never read back from the store without them.

`tests/unit/stream/test_state_cache.py` kills a simulated worker at every write, restarts it
with its disk, without it, or lets another worker take over, and checks that every agent
ends with each of its runs exactly once; the fault suite (`make test-faults`) checks the
whole worker.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from worker.learner import AgentState
from worker.learner.analysis import CallObservation
from worker.learner.run_ids import RunIds, id_bytes
from worker.learner.state import legacy_run_ids
from worker.stream.run_id_log import PartitionLog
from worker.stream.state_records import (
    agent_key,
    decode_delta,
    decode_part,
    decode_snapshot_head,
    delta_key,
    encode_delta,
    encode_snapshot,
    is_legacy_state,
    part_key,
)

log = logging.getLogger(__name__)

#: agents kept decoded at most (those with unwritten or unpublished changes come on top)
MAX_DECODED = 2048
#: a new snapshot replaces the deltas once there are this many (bounds a read's lookups) ...
MAX_DELTAS = 64
#: ... or once they hold more bytes than the snapshot (and at least this many)
MIN_DELTA_BYTES = 8192
#: estimated memory of an agent besides its state (entry, key, dict slot, publisher digests)
ENTRY_BYTES = 600
#: estimated memory of a decoded state, from the size of its serialized form (measured:
#: 13-21x for a few runs, 4-5x for thousands)
DECODED_BASE_BYTES = 30_000
DECODED_PER_BYTE = 6


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
        self._dirty: dict[str, Entry] = {}
        self._to_publish: dict[str, Entry] = {}
        self._unlogged: dict[str, Entry] = {}  # entries with `unlogged` ids
        self._logs: dict[int, PartitionLog] = {}
        self.state_bytes = 0
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
            self._unlogged[agent_id] = entry
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
        """The agent's snapshot and the deltas of the same owner that continue it."""
        entry = Entry(agent_id, partition, self)
        head_value = self._get(agent_key(agent_id))
        if head_value is None:
            entry.decoded = AgentState()
            return entry
        if is_legacy_state(head_value):  # format 1: state and run ids in one value
            entry.decoded = AgentState.from_bytes(head_value)
            entry.unlogged = part.add_stored(legacy_run_ids(head_value))
            entry.snapshot_bytes = len(head_value)
            return entry
        head = decode_snapshot_head(head_value)
        body = head.body
        if head.parts:
            keys = [part_key(agent_id, head.owner, head.upto, i) for i in range(head.parts)]
            pieces = [self._get(key) for key in keys]
            if any(p is None for p in pieces):
                raise ValueError(f"state of agent {agent_id!r}: a snapshot part is missing")
            body = b"".join(decode_part(p) for p in pieces if p is not None)
        state = AgentState.from_bytes(body)
        unlogged = part.add_stored(head.run_ids)
        deltas: list[bytes] = []
        entry.owner, entry.upto, entry.parts = head.owner, head.upto, head.parts
        entry.seq, entry.snapshot_bytes = head.upto, len(body)
        while True:
            value = self._get(delta_key(agent_id, entry.seq + 1))
            if value is None:
                break
            delta = decode_delta(value)
            if delta.owner != head.owner or delta.seq != entry.seq + 1:
                break  # written on another (older) snapshot: not part of this chain
            state.fold(delta.observations, delta.runs)
            unlogged += part.add_stored(delta.run_ids)
            deltas.append(value)
            entry.seq += 1
            entry.deltas += 1
            entry.delta_bytes += len(value)
        entry.decoded = state
        entry.unlogged = unlogged or None
        entry.blob, entry.blob_deltas = body, deltas or None
        return entry

    def decode(self, entry: Entry) -> AgentState:
        """Make a cold entry decoded again (and count it among the decoded ones)."""
        assert entry.blob is not None
        state = AgentState.from_bytes(entry.blob)
        for value in entry.blob_deltas or ():
            delta = decode_delta(value)
            state.fold(delta.observations, delta.runs)
        entry.decoded = state
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
        self._dirty[agent_id] = entry
        if entry.consumed_at is None:
            entry.consumed_at = consumed_at
        entry.run_end_ns = end_ns if entry.run_end_ns is None else max(entry.run_end_ns, end_ns)
        self._to_publish[agent_id] = entry

    # --- writing --------------------------------------------------------------------------------

    def flush_to_table(self) -> int:
        """Write every change into the table (and its changelog). Synchronous.

        Per partition, in this order: the deltas, the new snapshots, the run ids, then the
        deletions of what the snapshots replaced. Returns the number of records written."""
        owned = self.owned() if self.owned is not None else None
        by_partition: dict[int, list[Entry]] = {}
        for entry in self._dirty.values():
            if owned is not None and entry.partition not in owned:
                log.warning("not writing state of %s: partition no longer owned", entry.agent_id)
                self._clean(entry)
                continue
            by_partition.setdefault(entry.partition, []).append(entry)
        self._dirty.clear()
        written = 0
        for partition, part in self._logs.items():
            entries = by_partition.pop(partition, [])
            if not entries and not part.unwritten:
                continue
            if owned is not None and partition not in owned:
                continue
            snapshots = [e for e in entries if not self._write_delta(e, part)]
            deletions = [d for e in snapshots for d in self._write_snapshot(e, part)]
            written += len(entries) + part.flush(self._writer(partition, "run_ids"))
            delete = self._writer(partition, "tombstone")
            for key in deletions:
                delete(key, None)
            written += len(deletions)
            for entry in entries:
                self._clean(entry)
                if entry.decoded is not None:
                    self._resize(entry, decoded_estimate(entry.snapshot_bytes + entry.delta_bytes))
        for entries in by_partition.values():  # never read there: nothing to write
            for entry in entries:
                self._clean(entry)
        for entry in self._unlogged.values():
            entry.unlogged = None  # the run ids were just written, after every agent record
        self._unlogged.clear()
        self._flushes += 1
        self._cool_unused()
        self._fit()
        return written

    def _writer(self, partition: int, kind: str) -> Callable[[bytes, bytes | None], Any]:
        put, counts = self.table.put, self.written_bytes

        def write(key: bytes, value: bytes | None) -> Any:
            counts[kind] = counts.get(kind, 0) + len(key) + (len(value) if value else 0)
            return put(partition, key, value)

        return write

    def _write_delta(self, entry: Entry, part: PartitionLog) -> bool:
        """Write the entry's pending runs as a delta; False when a snapshot is due instead."""
        if entry.owner != part.owner or entry.deltas >= MAX_DELTAS or not entry.pending_runs:
            return False
        value = encode_delta(
            part.owner,
            entry.seq + 1,
            entry.pending_runs,
            bytes(entry.pending_ids or b""),
            entry.pending or [],
        )
        if entry.delta_bytes + len(value) > max(entry.snapshot_bytes, MIN_DELTA_BYTES):
            return False
        key = delta_key(entry.agent_id, entry.seq + 1)
        entry.receipt = self._writer(entry.partition, "delta")(key, value)
        if entry.blob is not None:  # the serialized form stays whole: body + deltas
            entry.blob_deltas = [*(entry.blob_deltas or ()), value]
        entry.seq += 1
        entry.deltas += 1
        entry.delta_bytes += len(value)
        return True

    def _write_snapshot(self, entry: Entry, part: PartitionLog) -> list[bytes]:
        """The whole state as a new snapshot of this worker, carrying the ids of the runs it
        adds; returns the keys of what it replaces (to delete once the run ids are written)."""
        body = entry.state.to_bytes()
        carried = bytes(entry.pending_ids or b"") + bytes(entry.unlogged or b"")
        upto = entry.seq + 1  # a sequence number of its own: (owner, upto) names it
        head, parts = encode_snapshot(part.owner, upto, carried, body)
        write = self._writer(entry.partition, "snapshot")
        for i, value in enumerate(parts):
            write(part_key(entry.agent_id, part.owner, upto, i), value)
        entry.receipt = write(agent_key(entry.agent_id), head)
        replaced = [delta_key(entry.agent_id, seq) for seq in range(entry.upto + 1, entry.seq + 1)]
        replaced += [
            part_key(entry.agent_id, entry.owner, entry.upto, i) for i in range(entry.parts)
        ]
        entry.owner, entry.upto, entry.seq, entry.parts = part.owner, upto, upto, len(parts)
        entry.snapshot_bytes, entry.deltas, entry.delta_bytes = len(body), 0, 0
        entry.blob, entry.blob_deltas = body, None
        return replaced

    def _clean(self, entry: Entry) -> None:
        entry.store_dirty = False
        entry.pending = entry.pending_ids = None
        entry.pending_runs = 0

    # --- publishing -----------------------------------------------------------------------------

    def take_to_publish(self) -> list[tuple[str, Entry]]:
        """Agents changed since the last call (the coalesced publish batch)."""
        batch = list(self._to_publish.items())
        self._to_publish.clear()
        return batch

    def publish_all_again(self) -> None:
        """Queue every held agent for publishing (after a failed publish)."""
        self._to_publish.update(self._entries)

    # --- memory ---------------------------------------------------------------------------------

    def keep_partitions(self, partitions: Iterable[int]) -> int:
        """Forget agents (and run ids) of partitions this worker no longer owns; returns how
        many agents."""
        keep = set(partitions)
        gone = [a for a, e in self._entries.items() if e.partition not in keep]
        for agent_id in gone:
            entry = self._entries.pop(agent_id)
            self._decoded.pop(agent_id, None)
            self._probation.pop(agent_id, None)
            self._to_publish.pop(agent_id, None)
            self._unlogged.pop(agent_id, None)
            if self._dirty.pop(agent_id, None) is not None:
                log.warning("dropping unwritten state of revoked agent %s", agent_id)
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
            agent_id in self._dirty
            or agent_id in self._to_publish
            or agent_id in self._unlogged
            or (receipt is not None and not receipt.applied)
        )

    def fit(self) -> None:
        """Serialize and drop agents now until within the bounds (also done on every read)."""
        self._fit()

    def _fit(self, keep: str | None = None) -> None:
        """Keep at most `max_decoded` agents decoded and the estimate within `max_bytes`:
        first serialize decoded agents, then drop serialized ones, least recently used first.
        Pinned agents stay, and so does `keep` (in use)."""
        decoded, entries, pinned = self._decoded, self._entries, self._pinned
        while len(decoded) > self.max_decoded or self.state_bytes > self.max_bytes:
            victim = next((e for a, e in decoded.items() if a != keep and not pinned(a, e)), None)
            if victim is None:
                break
            del decoded[victim.agent_id]
            self._probation.pop(victim.agent_id, None)
            self._encode(victim)
        while self.state_bytes > self.max_bytes:
            victim = next(
                (e for a, e in entries.items() if e.decoded is None and not pinned(a, e)), None
            )
            if victim is None:
                return
            del entries[victim.agent_id]
            self.state_bytes -= victim.size

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
