"""Agent states: decoded in memory, written to the faust table at each offset commit.

One table value per agent holds its statistics AND its window of learned run ids
(`AgentState.to_bytes`), so a state write is atomic: a run replayed after a crash is either
in the stored state (and then recognised as a duplicate) or not learned at all.

Writes are coalesced: learning only marks an agent dirty; `flush_to_table` writes each dirty
agent once, and runs right before offsets are committed (see `checkpoint`), so an offset
is never committed ahead of the state that includes its run.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from worker.learner import AgentState
from worker.stream.faust_internals import current_event

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    """One agent's decoded state and what still has to happen to it."""

    state: AgentState
    partition: int
    #: the last event that changed the state: its partition routes the table write
    event: Any = None
    store_dirty: bool = False
    #: monotonic time the oldest unpublished change was consumed, and the newest run's end
    consumed_at: float | None = None
    run_end_ns: int | None = None
    size: int = 0


class StateCache:
    """Decoded agent states by agent id, backed by a faust table of raw bytes."""

    def __init__(self, table: Any, max_agents: int) -> None:
        self.table = table
        self.max_agents = max_agents
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._to_publish: dict[str, Entry] = {}
        self.state_bytes = 0
        #: the partitions this worker owns now; states of others are never written
        self.owned: Callable[[], set[int]] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, agent_id: str, partition: int) -> Entry:
        """The agent's entry, read from the table (inside the event context) when not cached."""
        entry = self._entries.get(agent_id)
        if entry is not None:
            self._entries.move_to_end(agent_id)
            return entry
        blob = self.table.get(agent_id.encode())
        state = AgentState.from_bytes(blob) if blob else AgentState()
        entry = Entry(state=state, partition=partition, size=len(blob) if blob else 0)
        self._entries[agent_id] = entry
        self._evict()
        return entry

    def changed(
        self, agent_id: str, entry: Entry, event: Any, consumed_at: float, end_ns: int
    ) -> None:
        """Record that `event`'s run changed the agent: write it at the next commit, publish it."""
        entry.event = event
        entry.store_dirty = True
        if entry.consumed_at is None:
            entry.consumed_at = consumed_at
        entry.run_end_ns = end_ns if entry.run_end_ns is None else max(entry.run_end_ns, end_ns)
        self._to_publish[agent_id] = entry

    def rewrite(self, entry: Entry, event: Any) -> None:
        """Write the agent's state again at the next commit, unchanged.

        For a replayed run found already learned: after a crash the local store can hold a
        state whose changelog record never reached the broker (faust writes RocksDB first).
        Writing it again puts those runs in the changelog before this run's offset commits,
        so another worker or a rebuilt disk has them too."""
        entry.event = event
        entry.store_dirty = True

    def flush_to_table(self) -> int:
        """Write every dirty agent's state into the table (and its changelog). Synchronous."""
        written = 0
        owned = self.owned() if self.owned is not None else None
        for agent_id, entry in self._entries.items():
            if not entry.store_dirty:
                continue
            if owned is not None and entry.partition not in owned:
                log.warning("not writing state of %s: partition no longer owned", agent_id)
                entry.store_dirty = False
                entry.event = None
                continue
            blob = entry.state.to_bytes()
            with current_event(entry.event):
                self.table[agent_id.encode()] = blob
            self.state_bytes += len(blob) - entry.size
            entry.size = len(blob)
            entry.store_dirty = False
            entry.event = None
            written += 1
        return written

    def take_to_publish(self) -> list[tuple[str, Entry]]:
        """Agents changed since the last call (the coalesced publish batch)."""
        batch = list(self._to_publish.items())
        self._to_publish.clear()
        return batch

    def publish_all_again(self) -> None:
        """Queue every held agent for publishing (after a failed publish)."""
        self._to_publish.update(self._entries)

    def keep_partitions(self, partitions: Iterable[int]) -> int:
        """Forget agents of partitions this worker no longer owns; returns how many."""
        keep = set(partitions)
        gone = [a for a, e in self._entries.items() if e.partition not in keep]
        for agent_id in gone:
            entry = self._entries.pop(agent_id)
            self._to_publish.pop(agent_id, None)
            self.state_bytes -= entry.size
            if entry.store_dirty:
                log.warning("dropping unwritten state of revoked agent %s", agent_id)
        return len(gone)

    def _evict(self) -> None:
        """Drop least recently used clean entries beyond `max_agents` (they stay in the table)."""
        excess = len(self._entries) - self.max_agents
        if excess <= 0:
            return
        for agent_id in list(self._entries)[: excess * 2]:
            entry = self._entries[agent_id]
            if not entry.store_dirty and agent_id not in self._to_publish:
                del self._entries[agent_id]
                self.state_bytes -= entry.size
                excess -= 1
                if excess <= 0:
                    return
