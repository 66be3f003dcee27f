"""The agents changed since the publisher last took them (one entry per agent: a commit's
runs of an agent coalesce into one publish), each held in memory until taken."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from worker.stream.state.cache import AgentCache
from worker.stream.state.entry import AgentEntry, Hold


@dataclass(slots=True)
class Change:
    """An agent to publish, with when its oldest unpublished run was consumed (monotonic
    seconds) and when its newest one ended (Unix ns): the latency histograms' marks."""

    entry: AgentEntry
    consumed_at: float
    run_end_ns: int

    @property
    def agent_id(self) -> str:
        return self.entry.agent_id


class PublishQueue:
    """Changes by agent id, oldest first."""

    def __init__(self, cache: AgentCache) -> None:
        self.cache = cache
        self._changes: dict[str, Change] = {}

    def __len__(self) -> int:
        return len(self._changes)

    def changed(self, entry: AgentEntry, consumed_at: float, run_end_ns: int) -> None:
        """A run changed the agent: publish it (keeping the oldest consume, newest end)."""
        change = self._changes.get(entry.agent_id)
        if change is None:
            self.cache.hold(entry, Hold.UNPUBLISHED)
            self._changes[entry.agent_id] = Change(entry, consumed_at, run_end_ns)
        else:
            change.entry = entry
            change.run_end_ns = max(change.run_end_ns, run_end_ns)

    def pending(self) -> list[AgentEntry]:
        """The agents changed and not taken yet (they stay queued)."""
        return [change.entry for change in self._changes.values()]

    def take(self) -> list[Change]:
        """Every change, oldest first; the agents may leave memory again."""
        changes = list(self._changes.values())
        self._changes = {}
        for change in changes:
            self.cache.release(change.entry, Hold.UNPUBLISHED)
        return changes

    def forget(self, entries: Iterable[AgentEntry]) -> None:
        """Agents whose partition left: their new owner publishes them."""
        for entry in entries:
            self._changes.pop(entry.agent_id, None)
