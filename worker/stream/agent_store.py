"""An agent's records in the state table (RocksDB and its compacted changelog): reading
them back, and writing what one commit changed.

Written at each offset commit, once faust has chosen its offsets, a partition at a time
(`StateCache.flush_partitions`, see `checkpoint`), only with what changed:

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
5. An agent whose records are not yet in the local store stays in memory until they are
   (`StateCache`), so it is never read back from the store without them.

`tests/unit/stream/test_state_cache.py` kills a simulated worker at every write, restarts it
with its disk, without it, or lets another worker take over, and checks that every agent
ends with each of its runs exactly once; the fault suite (`make test-faults`) checks the
whole worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from worker.learner import AgentState
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

if TYPE_CHECKING:
    from worker.stream.state_cache import Entry

#: a new snapshot replaces the deltas once there are this many (bounds a read's lookups) ...
MAX_DELTAS = 64
#: ... or once they hold more bytes than the snapshot (and at least this many). A snapshot
#: costs several times a delta to encode (every statistic compacted and dumped): with a
#: lower floor, an agent whose one commit of runs outweighs its still small snapshot (~60
#: runs a commit at 6,000 runs/s over 100 agents) was re-encoded whole at every commit.
#: Agents with larger snapshots (a few hundred runs and more) are not affected.
MIN_DELTA_BYTES = 32768

Get = Callable[[bytes], bytes | None]
#: a writer for one kind of record: (key, value or None to delete) -> the send's receipt
Writer = Callable[[str], Callable[[bytes, bytes | None], Any]]


def read_agent(entry: Entry, part: PartitionLog, get: Get) -> None:
    """Fill `entry` from the table: the agent's snapshot and the deltas of the same owner
    that continue it; ids the partition's run ids lack are added there (and noted in
    `entry.unlogged`: the agent's next snapshot carries them)."""
    agent_id = entry.agent_id
    head_value = get(agent_key(agent_id))
    if head_value is None:
        entry.decoded = AgentState()
        return
    if is_legacy_state(head_value):  # format 1: state and run ids in one value
        entry.decoded = AgentState.from_bytes(head_value)
        entry.unlogged = part.add_stored(legacy_run_ids(head_value)) or None
        entry.snapshot_bytes = len(head_value)
        return
    head = decode_snapshot_head(head_value)
    body = head.body
    if head.parts:
        keys = [part_key(agent_id, head.owner, head.upto, i) for i in range(head.parts)]
        pieces = [get(key) for key in keys]
        if any(p is None for p in pieces):
            raise ValueError(f"state of agent {agent_id!r}: a snapshot part is missing")
        body = b"".join(decode_part(p) for p in pieces if p is not None)
    state = AgentState.from_bytes(body)
    unlogged = part.add_stored(head.run_ids)
    deltas: list[bytes] = []
    entry.owner, entry.upto, entry.parts = head.owner, head.upto, head.parts
    entry.seq, entry.snapshot_bytes = head.upto, len(body)
    while True:
        value = get(delta_key(agent_id, entry.seq + 1))
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


def decode(entry: Entry) -> AgentState:
    """The state from the entry's serialized form (snapshot body and deltas)."""
    assert entry.blob is not None
    state = AgentState.from_bytes(entry.blob)
    for value in entry.blob_deltas or ():
        delta = decode_delta(value)
        state.fold(delta.observations, delta.runs)
    return state


def write_delta(entry: Entry, part: PartitionLog, writer: Writer) -> bool:
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
    entry.receipt = writer("delta")(delta_key(entry.agent_id, entry.seq + 1), value)
    if entry.blob is not None:  # the serialized form stays whole: body + deltas
        entry.blob_deltas = [*(entry.blob_deltas or ()), value]
    entry.seq += 1
    entry.deltas += 1
    entry.delta_bytes += len(value)
    return True


def write_snapshot(entry: Entry, part: PartitionLog, writer: Writer) -> list[bytes]:
    """The whole state as a new snapshot of this worker, carrying the ids of the runs it adds
    and of `entry.unlogged`; returns the keys of what it replaces (to delete once the run ids
    are written)."""
    body = entry.state.to_bytes()
    carried = bytes(entry.pending_ids or b"") + bytes(entry.unlogged or b"")
    upto = entry.seq + 1  # a sequence number of its own: (owner, upto) names it
    head, parts = encode_snapshot(part.owner, upto, carried, body)
    write = writer("snapshot")
    for i, value in enumerate(parts):
        write(part_key(entry.agent_id, part.owner, upto, i), value)
    entry.receipt = write(agent_key(entry.agent_id), head)
    replaced = [delta_key(entry.agent_id, seq) for seq in range(entry.upto + 1, entry.seq + 1)]
    replaced += [part_key(entry.agent_id, entry.owner, entry.upto, i) for i in range(entry.parts)]
    entry.owner, entry.upto, entry.seq, entry.parts = part.owner, upto, upto, len(parts)
    entry.snapshot_bytes, entry.deltas, entry.delta_bytes = len(body), 0, 0
    entry.blob, entry.blob_deltas = body, None
    return replaced
