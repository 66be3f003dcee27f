"""Agent entries in memory, bounded in bytes.

An agent is kept decoded (an `AgentState`) while it is learned or published and while it is
used again soon: at most `max_decoded` of them besides the held ones, each serialized again
once unused for `COOL_AFTER` commits, and fewer once the estimate passes `DECODED_SHARE` of
`max_bytes`. The others are kept serialized (the body of the last
snapshot and the deltas since, as the table has them: about 2 KB for an agent with a few
runs, a tenth of the decoded size), and the least recently used of those are dropped (they
stay in the table) while the estimated total exceeds `max_bytes`.

An agent with a hold (`Hold`: unwritten runs, unpublished changes, ids only its records
have, a write not yet in the local store) is neither serialized nor dropped. Held agents
are kept out of the two least-recently-used orders, so making room never walks over them:
each agent serialized or dropped costs O(1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from worker.learner import AgentState, LearnerConfig
from worker.stream.state import agent_records
from worker.stream.state.entry import AgentEntry, Hold, Serialized

#: agents kept decoded at most, besides the held ones. In a fleet of 10,000 agents
#: (Zipf-skewed, 5,000 runs/s) about 8,000 are in use within half a minute; with 2,048 each
#: of their runs paid a decode, a new set of predictors and the free of the old state
#: (`python -m benchmarks.fleet_cpu`: 440 us per run at 4,096, 344 at 8,192, 335 unbounded)
MAX_DECODED = 8192
#: a decoded agent unused for this many commits (~30 s) is serialized: a fleet of agents
#: that run now and then would otherwise keep thousands decoded, for nothing (memory, and
#: time the garbage collector spends walking them)
COOL_AFTER = 30
#: decoded agents beyond the held ones give way to serialized ones (10-20x smaller) once the
#: estimate exceeds this share of `max_bytes`: a fleet of 10,000 agents (~350 MiB estimated,
#: 8,192 decoded) keeps them all, one of 100,000 (whose serialized agents alone take ~300 MiB)
#: keeps fewer decoded instead of growing past 1 GiB of RSS with the 1 GiB default
DECODED_SHARE = 0.4
#: estimated memory of an agent besides its state (entry, key, dict slots, publisher digests)
ENTRY_BYTES = 600
#: estimated memory of a decoded state, from the size of its serialized form (measured:
#: 13-21x for a few runs, 4-5x for thousands)
DECODED_BASE_BYTES = 30_000
DECODED_PER_BYTE = 6


def decoded_estimate(serialized: int) -> int:
    return DECODED_BASE_BYTES + DECODED_PER_BYTE * serialized


class AgentCache:
    """Entries by agent id; the unheld ones in two least-recently-used orders."""

    def __init__(
        self, max_bytes: int, max_decoded: int = MAX_DECODED, config: LearnerConfig | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.max_decoded = max_decoded
        #: the rules serialized states are decoded under (their deltas folded)
        self.config = config or LearnerConfig()
        self._entries: dict[str, AgentEntry] = {}
        #: unheld agents, least recently used first: decoded, and serialized only
        self._decoded: OrderedDict[str, AgentEntry] = OrderedDict()
        self._serialized: OrderedDict[str, AgentEntry] = OrderedDict()
        #: when each decoded, unheld agent was last used (a count of commits)
        self._used_at: dict[str, int] = {}
        self._commits = 0
        #: agents with a write not yet known to be in the local store
        self._unapplied: list[AgentEntry] = []
        self.decoded_count = 0
        self.state_bytes = 0
        #: decoded states serialized, by why: to make room ("bytes": the decoded share of
        #: `max_bytes`; "count": `max_decoded`) or unused for `COOL_AFTER` commits ("idle")
        self.serialized_by = {"bytes": 0, "count": 0, "idle": 0}
        #: cold entries decoded again (a run or a publish of an agent kept serialized)
        self.decodes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, agent_id: str) -> bool:
        return agent_id in self._entries

    def get(self, agent_id: str) -> AgentEntry | None:
        """The cached entry, now the most recently used (None: not cached)."""
        entry = self._entries.get(agent_id)
        if entry is not None and not entry.holds:
            self._touch(entry)
        return entry

    def add(self, entry: AgentEntry) -> None:
        """A new entry (decoded, as read from the table)."""
        self._entries[entry.agent_id] = entry
        self.decoded_count += entry.state is not None
        self._resize(entry)
        self._file(entry)

    def state(self, entry: AgentEntry) -> AgentState:
        """The entry's decoded state, decoding it now if it is cold."""
        state = entry.state
        if state is None:
            assert entry.serialized is not None  # a cold entry always has its bytes
            state = entry.state = agent_records.decode(entry.serialized, self.config)
            self.decodes += 1
            if self._entries.get(entry.agent_id) is entry:
                self.decoded_count += 1
                self._resize(entry)
                self._unfile(entry)
                self._file(entry)
        return state

    # --- holds ----------------------------------------------------------------------------------

    def hold(self, entry: AgentEntry, why: int) -> None:
        if not entry.holds:
            self._unfile(entry)
        entry.holds |= why

    def release(self, entry: AgentEntry, why: int) -> None:
        if not entry.holds & why:
            return
        entry.holds &= ~why
        if not entry.holds and self._entries.get(entry.agent_id) is entry:
            self._file(entry)

    def written(self, entries: Iterable[AgentEntry]) -> None:
        """Agents just written: held until their last write is in the local store."""
        for entry in entries:
            self.hold(entry, Hold.UNAPPLIED)
            self._unapplied.append(entry)
            if entry.state is not None:
                self._resize(entry)

    def release_applied(self) -> None:
        """Release the agents whose last write the local store now holds."""
        waiting = []
        for entry in self._unapplied:
            receipt = entry.last_write
            if receipt is None or receipt.applied:
                # the send's future holds the record (key, value, metadata): ~2 KB per agent
                entry.last_write = None
                self.release(entry, Hold.UNAPPLIED)
            else:
                waiting.append(entry)
        self._unapplied = waiting

    # --- room -----------------------------------------------------------------------------------

    def committed(self) -> None:
        """A commit's writes are done: serialize the agents unused for `COOL_AFTER` commits,
        then make room."""
        self._commits += 1
        self.release_applied()
        due = self._commits - COOL_AFTER
        decoded, used_at = self._decoded, self._used_at
        while decoded:
            agent_id, entry = next(iter(decoded.items()))
            if used_at[agent_id] > due:
                break  # least recently used first: the rest are younger
            self._encode(entry, "idle")
        self.fit()

    def fit(self) -> None:
        """Serialize decoded agents, least recently used first, until at most `max_decoded`
        unheld agents are decoded and the estimate is within `DECODED_SHARE` of `max_bytes`;
        then drop serialized ones until it is within `max_bytes`."""
        decoded, serialized = self._decoded, self._serialized
        decoded_bound = int(self.max_bytes * DECODED_SHARE)
        while decoded:
            if len(decoded) > self.max_decoded:
                self._encode(next(iter(decoded.values())), "count")
            elif self.state_bytes > decoded_bound:
                self._encode(next(iter(decoded.values())), "bytes")
            else:
                break
        while serialized and self.state_bytes > self.max_bytes:
            _, entry = serialized.popitem(last=False)
            del self._entries[entry.agent_id]
            self.state_bytes -= entry.size

    def drop(self, keep: Iterable[int]) -> list[AgentEntry]:
        """Forget the agents of partitions not in `keep`; returns them."""
        partitions = set(keep)
        gone = [e for e in self._entries.values() if e.partition not in partitions]
        for entry in gone:
            self._unfile(entry)
            del self._entries[entry.agent_id]
            self.decoded_count -= entry.state is not None
            self.state_bytes -= entry.size
        self._unapplied = [e for e in self._unapplied if e.partition in partitions]
        return gone

    # --- bookkeeping ----------------------------------------------------------------------------

    def _touch(self, entry: AgentEntry) -> None:
        agent_id = entry.agent_id
        if entry.state is not None:
            self._decoded.move_to_end(agent_id)
            self._used_at[agent_id] = self._commits
        else:
            self._serialized.move_to_end(agent_id)

    def _file(self, entry: AgentEntry) -> None:
        """Put an unheld entry at the recent end of its order."""
        if entry.holds:
            return
        if entry.state is not None:
            self._decoded[entry.agent_id] = entry
            self._used_at[entry.agent_id] = self._commits
        else:
            self._serialized[entry.agent_id] = entry

    def _unfile(self, entry: AgentEntry) -> None:
        agent_id = entry.agent_id
        if self._decoded.pop(agent_id, None) is not None:
            del self._used_at[agent_id]
        else:
            self._serialized.pop(agent_id, None)

    def _encode(self, entry: AgentEntry, why: str) -> None:
        """Keep an unheld decoded entry serialized only: its snapshot body and deltas when
        known (nothing to encode), else its state encoded now."""
        assert entry.state is not None
        self.serialized_by[why] += 1
        if entry.serialized is None:
            entry.serialized = Serialized(entry.state.to_bytes())
        self._unfile(entry)
        entry.state = None
        self.decoded_count -= 1
        self._resize(entry)
        self._file(entry)

    def _resize(self, entry: AgentEntry) -> None:
        if entry.state is not None:
            chain = entry.chain
            state_bytes = decoded_estimate(chain.snapshot_bytes + chain.delta_bytes)
        else:
            assert entry.serialized is not None
            state_bytes = entry.serialized.size
        size = ENTRY_BYTES + state_bytes
        self.state_bytes += size - entry.size
        entry.size = size
