"""One agent's learning state: per-node statistics plus the run ids already learned.

This is what the worker keeps per agent (as `to_bytes()` in RocksDB and the changelog),
so it is compact, mergeable, and holds the dedupe window in the same value as the
statistics: one atomic write says both "learned" and "what was learned".
"""

from __future__ import annotations

import struct
from itertools import groupby
from operator import itemgetter
from typing import Any
from uuid import UUID

import orjson

from worker.learner.analysis import CallObservation, observe_run
from worker.learner.config import LearnerConfig
from worker.learner.stats import FOLD_BATCH, Mean, Statistic
from worker.models import Run

_FORMAT_VERSION = 1
_HEADER = struct.Struct("<BI")  # format version, length of the JSON part; run ids follow
_ID_BYTES = 16
#: observations a node queues before folding them into its statistics (bounds memory)
FOLD_OBSERVATIONS = 512
_call_index = itemgetter(1)


class StatGroup:
    """The four statistics SPEC 4.6 folds, for one node and one call index (or all)."""

    __slots__ = ("interarrival_ms", "output_tokens", "remaining_calls", "score")

    def __init__(self) -> None:
        self.remaining_calls = Statistic()
        self.interarrival_ms = Statistic()
        self.output_tokens = Statistic()
        self.score = Mean()  # only its mean is ever read (SPEC section 5)

    def extend(self, observations: list[CallObservation]) -> None:
        """Fold observations in, in order (column-wise: one comprehension per statistic)."""
        remaining = self.remaining_calls.pending
        remaining += [obs[2] for obs in observations]
        self.interarrival_ms.pending += [obs[3] for obs in observations if obs[3] is not None]
        self.output_tokens.pending += [obs[4] for obs in observations]
        scores = self.score
        total = scores.total
        for obs in observations:  # one by one, so the float sum never depends on batching
            total += obs[5]
        scores.total = total
        scores.count += len(observations)
        if len(remaining) >= FOLD_BATCH:  # remaining_calls gets every sample: the longest
            for name in self.__slots__:
                getattr(self, name).compact()

    def merge(self, other: StatGroup) -> None:
        for name in self.__slots__:
            getattr(self, name).merge(getattr(other, name))

    def dump(self) -> list[Any]:
        return [getattr(self, name).dump() for name in self.__slots__]

    @classmethod
    def load(cls, data: list[Any]) -> StatGroup:
        group = cls()
        for name, part in zip(cls.__slots__, data, strict=True):
            setattr(group, name, Mean.load(part) if name == "score" else Statistic.load(part))
        return group

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StatGroup) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__
        )


class NodeStats:
    """Statistics of one trie node: per call index, and across all indices.

    `add` only queues the observation; the queue is folded into the groups when they are
    read (or once it is `FOLD_OBSERVATIONS` long), a column at a time, which costs far less
    than four appends into four groups per observation on the hot path.
    """

    __slots__ = ("_any_index", "_by_index", "_queued")

    def __init__(self) -> None:
        self._any_index = StatGroup()
        self._by_index: dict[int, StatGroup] = {}
        self._queued: list[CallObservation] = []

    def add(self, obs: CallObservation) -> None:
        queued = self._queued
        queued.append(obs)
        if len(queued) >= FOLD_OBSERVATIONS:
            self._fold()

    @property
    def any_index(self) -> StatGroup:
        self._fold()
        return self._any_index

    @property
    def by_index(self) -> dict[int, StatGroup]:
        self._fold()
        return self._by_index

    def _fold(self) -> None:
        queued = self._queued
        if not queued:
            return
        self._queued = []
        self._any_index.extend(queued)
        queued.sort(key=_call_index)  # stable: each index keeps its observations in order
        by_index = self._by_index
        for index, observations in groupby(queued, _call_index):
            group = by_index.get(index)
            if group is None:
                group = by_index[index] = StatGroup()
            group.extend(list(observations))

    def merge(self, other: NodeStats) -> None:
        self.any_index.merge(other.any_index)
        by_index = self.by_index
        for index, group in other.by_index.items():
            by_index.setdefault(index, StatGroup()).merge(group)

    def dump(self) -> list[Any]:
        return [self.any_index.dump(), [[i, g.dump()] for i, g in self.by_index.items()]]

    @classmethod
    def load(cls, data: list[Any]) -> NodeStats:
        node = cls()
        node._any_index = StatGroup.load(data[0])
        node._by_index = {i: StatGroup.load(g) for i, g in data[1]}
        return node

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NodeStats)
            and self.any_index == other.any_index
            and self.by_index == other.by_index
        )


class AgentState:
    """Everything learned for one agent; `learn` folds in one run (SPEC section 4)."""

    __slots__ = ("_recent", "_seen", "children", "root", "runs")

    def __init__(self) -> None:
        self.runs = 0
        self.root = NodeStats()
        #: the root's children by call name (a name with "/" is still one node)
        self.children: dict[str, NodeStats] = {}
        self._seen: set[int] = set()  # run ids (as 128-bit ints) in the dedupe window
        self._recent = bytearray()  # the same ids, 16 bytes each, oldest first

    @property
    def node_count(self) -> int:
        """Distinct trie nodes, the root included."""
        return 1 + len(self.children)

    def nodes_after(self, run: Run) -> int:
        """How many trie nodes the agent would have once `run` is learned."""
        new = {c.name for c in run.calls if c.kind == "llm" and c.ended_at is not None}
        return self.node_count + len(new.difference(self.children))

    def has_run(self, run_id: UUID) -> bool:
        return run_id.int in self._seen

    def learn(self, run: Run, config: LearnerConfig) -> bool:
        """Fold one run in; False (and no change) when its id was already learned."""
        if run.id.int in self._seen:
            return False
        root_add = self.root.add
        children = self.children
        for obs in observe_run(run, config):
            root_add(obs)
            node = children.get(obs[0])
            if node is None:
                node = children[obs[0]] = NodeStats()
            node.add(obs)
        self.runs += 1
        self._remember(run.id.int, config.dedupe_window)
        return True

    def _remember(self, run_id: int, window: int) -> None:
        self._seen.add(run_id)
        self._recent += run_id.to_bytes(_ID_BYTES, "big")
        excess = len(self._seen) - window
        if excess > 0:  # forget the oldest ids
            cut = excess * _ID_BYTES
            for i in range(0, cut, _ID_BYTES):
                self._seen.discard(int.from_bytes(self._recent[i : i + _ID_BYTES], "big"))
            del self._recent[:cut]

    def merge(self, other: AgentState, config: LearnerConfig | None = None) -> AgentState:
        """Fold a state learned from other runs into this one, and return this one.

        Raises ValueError when both remember a run id: that run would count twice.
        """
        shared = self._seen & other._seen
        if shared:
            raise ValueError(f"states share {len(shared)} run id(s); merging would double-count")
        self.runs += other.runs
        self.root.merge(other.root)
        for name, node in other.children.items():
            self.children.setdefault(name, NodeStats()).merge(node)
        window = (config or LearnerConfig()).dedupe_window
        for i in range(0, len(other._recent), _ID_BYTES):
            self._remember(int.from_bytes(other._recent[i : i + _ID_BYTES], "big"), window)
        return self

    def to_bytes(self) -> bytes:
        """Compact form: a small header, the statistics as JSON, then 16 bytes per run id."""
        body = orjson.dumps(
            [self.runs, self.root.dump(), {n: s.dump() for n, s in self.children.items()}]
        )
        return b"".join((_HEADER.pack(_FORMAT_VERSION, len(body)), body, self._recent))

    @classmethod
    def from_bytes(cls, blob: bytes) -> AgentState:
        version, length = _HEADER.unpack_from(blob)
        if version != _FORMAT_VERSION:
            raise ValueError(f"unknown agent state format version {version}")
        start = _HEADER.size
        runs, root, children = orjson.loads(blob[start : start + length])
        state = cls()
        state.runs = runs
        state.root = NodeStats.load(root)
        state.children = {name: NodeStats.load(data) for name, data in children.items()}
        state._recent = bytearray(blob[start + length :])
        ids = state._recent
        state._seen = {
            int.from_bytes(ids[i : i + _ID_BYTES], "big") for i in range(0, len(ids), _ID_BYTES)
        }
        return state

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AgentState)
            and self.runs == other.runs
            and self._seen == other._seen
            and self.root == other.root
            and self.children == other.children
        )

    def __repr__(self) -> str:
        return f"AgentState(runs={self.runs}, nodes={self.node_count})"
