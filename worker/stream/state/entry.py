"""One agent as the worker holds it: its state, where its records stand in the table, and
what still has to happen to it before it may leave memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from worker.learner import AgentState
from worker.learner.accuracy import Pair
from worker.learner.analysis import CallObservation
from worker.stream.state.protocols import Receipt


class Hold:
    """Why an agent must stay in memory as it is (neither serialized nor dropped): the bits
    of `AgentEntry.holds`. Plain ints: an `IntFlag`'s operators cost a microsecond or more
    each, and an agent is held and released several times per run."""

    NONE: Final = 0
    #: runs learned that are not written to the table yet
    UNWRITTEN: Final = 1
    #: changes the publisher has not taken yet
    UNPUBLISHED: Final = 2
    #: holds run ids that only its own records have, not yet the partition's run ids: read
    #: back from the table it would not know them as learned
    UNLOGGED: Final = 4
    #: written, but not yet acknowledged into the local store: a read would miss the write
    UNAPPLIED: Final = 8


@dataclass(slots=True)
class Chain:
    """Where the agent's records stand in the table: a snapshot (written by the worker with
    token `owner`, numbered `upto`, inline or in `parts`), then the deltas `upto + 1 .. seq`
    written on it (see `agent_records`)."""

    owner: int = 0
    upto: int = 0
    parts: int = 0
    snapshot_bytes: int = 0
    seq: int = 0
    deltas: int = 0
    delta_bytes: int = 0


@dataclass(slots=True)
class Serialized:
    """The state as the table holds it: the last snapshot's body and the deltas since."""

    body: bytes
    deltas: list[bytes] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.body) + sum(map(len, self.deltas))


@dataclass(slots=True)
class Unwritten:
    """The runs learned since the agent was last written: their observations and ids, what
    they added to its recent accuracy, and (adaptive rule set, priors) their calls' models."""

    runs: int = 0
    observations: list[CallObservation] = field(default_factory=list)
    ids: bytearray = field(default_factory=bytearray)
    recent: list[Pair] = field(default_factory=list)
    models: list[str | None] | None = None


@dataclass(slots=True, eq=False)
class AgentEntry:
    """An agent: its state (decoded, or only serialized while cold), its chain of records in
    the table, the runs not yet written, and the holds that keep it in memory."""

    agent_id: str
    partition: int
    #: the decoded state; None while the agent is kept serialized only
    state: AgentState | None
    #: the state's serialized form as the table has it (None: not known, encoded on demand)
    serialized: Serialized | None = None
    chain: Chain = field(default_factory=Chain)
    unwritten: Unwritten | None = None
    #: ids of stored runs that the partition's stored run ids may lack (the agent's next
    #: snapshot carries them until those run ids are written)
    unlogged: bytearray | None = None
    #: the send of the last record written for the agent, until the local store has it
    last_write: Receipt | None = None
    #: `Hold` bits
    holds: int = Hold.NONE
    #: estimated memory, as the cache counts it
    size: int = 0
