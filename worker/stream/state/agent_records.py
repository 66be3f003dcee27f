"""An agent's records in the state table: reading them back, and writing what one commit
changed (a delta, or a new snapshot).

Per agent the table holds a *snapshot* (its statistics) at the agent's key, tagged with the
*owner* token of the worker that wrote it and a sequence number `upto`, then *deltas* keyed
`(agent, seq)` for seq = upto+1, upto+2, ...: the observations and ids of the runs one
commit learned. The agent's stored state is its snapshot plus the unbroken run of deltas
that follow it with the snapshot's owner token. A worker writes deltas only on a snapshot it
wrote itself since it took the partition over (its token); otherwise its first write of the
agent is a new snapshot with its token. Once the deltas outweigh the snapshot (or number
`MAX_DELTAS`), a new snapshot replaces them, so an agent costs about twice the bytes of its
deltas and no record grows without bound (large snapshots go in parts).

Why this never loses or double-counts a run is argued once, in docs/operations.md
("Exactly once: the argument"); the rules it rests on are marked (rule N) here.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.learner import AgentState, LearnerConfig
from worker.learner.state import legacy_run_ids
from worker.stream.state.entry import AgentEntry, Chain, Serialized
from worker.stream.state.protocols import Get
from worker.stream.state.records import (
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
from worker.stream.state.run_id_log import PartitionLog

#: a new snapshot replaces the deltas once there are this many (bounds a read's lookups) ...
MAX_DELTAS = 64
#: ... or once they hold more bytes than the snapshot (and at least this many). A snapshot
#: costs several times a delta to encode (every statistic compacted and dumped): with a
#: lower floor, an agent whose one commit of runs outweighs its still small snapshot (~60
#: runs a commit at 6,000 runs/s over 100 agents) was re-encoded whole at every commit.
#: Agents with larger snapshots (a few hundred runs and more) are not affected.
MIN_DELTA_BYTES = 32768

#: queues one record of a kind ("delta", "snapshot", ...): (key, value or None to delete)
Put = Callable[[bytes, bytes | None], None]


def read(
    agent_id: str, partition: int, log: PartitionLog, get: Get, config: LearnerConfig
) -> AgentEntry:
    """The agent as the table holds it: its snapshot and the deltas of the same owner that
    continue it (rule 2), folded under `config`'s rules. Ids the partition's run ids lack are
    added there and kept in the entry's `unlogged`: its next snapshot carries them (rule 4)."""
    head_value = get(agent_key(agent_id))
    if head_value is None:
        return AgentEntry(agent_id, partition, AgentState())
    if is_legacy_state(head_value):  # format 1: state and run ids in one value
        entry = AgentEntry(agent_id, partition, AgentState.from_bytes(head_value))
        entry.unlogged = log.add_stored(legacy_run_ids(head_value)) or None
        entry.chain.snapshot_bytes = len(head_value)
        return entry
    head = decode_snapshot_head(head_value)
    body = head.body
    if head.parts:
        keys = [part_key(agent_id, head.owner, head.upto, i) for i in range(head.parts)]
        pieces = [get(key) for key in keys]
        if any(p is None for p in pieces):
            raise ValueError(f"state of agent {agent_id!r}: a snapshot part is missing")
        body = b"".join(decode_part(p) for p in pieces if p is not None)
    state = AgentState.from_bytes(body)
    unlogged = log.add_stored(head.run_ids)
    chain = Chain(head.owner, head.upto, head.parts, len(body), head.upto)
    serialized = Serialized(body)
    while True:
        value = get(delta_key(agent_id, chain.seq + 1))
        if value is None:
            break
        delta = decode_delta(value)
        if delta.owner != head.owner or delta.seq != chain.seq + 1:
            break  # written on another (older) snapshot: not part of this chain
        state.fold(delta.observations, delta.runs, delta.recent, config, delta.models)
        unlogged += log.add_stored(delta.run_ids)
        serialized.deltas.append(value)
        chain.seq += 1
        chain.deltas += 1
        chain.delta_bytes += len(value)
    return AgentEntry(agent_id, partition, state, serialized, chain, unlogged=unlogged or None)


def decode(serialized: Serialized, config: LearnerConfig) -> AgentState:
    """The state from its serialized form (snapshot body and deltas), under `config`'s rules."""
    state = AgentState.from_bytes(serialized.body)
    for value in serialized.deltas:
        delta = decode_delta(value)
        state.fold(delta.observations, delta.runs, delta.recent, config, delta.models)
    return state


def write_delta(entry: AgentEntry, owner: int, put: Callable[[str], Put]) -> bool:
    """Write the entry's unwritten runs as a delta on its chain; False when a snapshot is
    due instead (another owner's chain, too many deltas, or deltas outweighing it)."""
    chain, unwritten = entry.chain, entry.unwritten
    if chain.owner != owner or chain.deltas >= MAX_DELTAS or unwritten is None:
        return False
    seq = chain.seq + 1
    value = encode_delta(
        owner,
        seq,
        unwritten.runs,
        bytes(unwritten.ids),
        unwritten.observations,
        unwritten.recent,
        unwritten.models,
    )
    if chain.delta_bytes + len(value) > max(chain.snapshot_bytes, MIN_DELTA_BYTES):
        return False
    put("delta")(delta_key(entry.agent_id, seq), value)
    if entry.serialized is not None:  # the serialized form stays whole: body + deltas
        entry.serialized.deltas.append(value)
    chain.seq = seq
    chain.deltas += 1
    chain.delta_bytes += len(value)
    return True


def write_snapshot(
    entry: AgentEntry, state: AgentState, owner: int, put: Callable[[str], Put]
) -> list[bytes]:
    """`state` as a new snapshot of worker `owner`, carrying the ids of the runs it adds and
    of `entry.unlogged` (rule 1); returns the keys of the records it replaces, to delete once
    the partition's run ids are written."""
    body = state.to_bytes()
    unwritten = entry.unwritten
    carried = (bytes(unwritten.ids) if unwritten else b"") + bytes(entry.unlogged or b"")
    old = entry.chain
    upto = old.seq + 1  # a sequence number of its own: (owner, upto) names it
    head, parts = encode_snapshot(owner, upto, carried, body)
    write = put("snapshot")
    for i, value in enumerate(parts):
        write(part_key(entry.agent_id, owner, upto, i), value)
    write(agent_key(entry.agent_id), head)
    replaced = [delta_key(entry.agent_id, seq) for seq in range(old.upto + 1, old.seq + 1)]
    replaced += [part_key(entry.agent_id, old.owner, old.upto, i) for i in range(old.parts)]
    entry.chain = Chain(owner, upto, len(parts), len(body), upto)
    entry.serialized = Serialized(body)
    return replaced
