"""One agent's learning state: per-node statistics (SPEC 4.6) and the recent accuracy of
its hints (SPEC 10, `worker.learner.accuracy`).

Learning returns the run's observations, so that the worker can store what changed (a
delta) instead of the whole state; `fold` applies observations, `merge` adds a state learned
from other runs. Sums are exact and the serialized form is canonical, so a state gives the
same bytes however its runs were batched or split into deltas. Which run ids were learned is
kept apart (`worker.learner.run_ids`), per partition in the worker.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson

from worker.learner.accuracy import Pair, RecentAccuracy
from worker.learner.analysis import CallObservation, observe_run
from worker.learner.config import LearnerConfig
from worker.learner.evaluation import Learned, Scorer, recent_pair
from worker.learner.exact_sums import FAST_SHIFT, Mean, fast_units
from worker.learner.stats import FOLD_BATCH, Statistic
from worker.models import Run

#: 1: statistics and the agent's run ids in one value; 2: statistics only (exact sums);
#: 3: statistics and the recent accuracy
_FORMAT_VERSION = 3
_HEADER = struct.Struct("<BI")  # format version, length of the JSON part (v1: run ids follow)
#: observations a node queues before folding them into its statistics (bounds memory)
FOLD_OBSERVATIONS = 512
_call_index = itemgetter(1)
#: what a node queues: the observation's six fields, then its score in 2**-128 units (or None)
Queued = tuple[Any, ...]


_FAST_SCALE = float(1 << FAST_SHIFT)


def units_of(values: list[float]) -> list[int | None]:
    """`fast_units` of each score, in C-level passes when all are whole numbers of 2**-128
    (scaling by a power of two is exact; the scores of a run nearly always are)."""
    scaled = list(map(_FAST_SCALE.__mul__, values))
    if all(map(float.is_integer, scaled)):
        return list(map(int, scaled))
    return list(map(fast_units, values))


class StateFormatError(ValueError):
    """Bytes that are not an agent state this version can read."""


class StatGroup:
    """The four statistics SPEC 4.6 folds, for one node and one call index (or all)."""

    __slots__ = ("interarrival_ms", "output_tokens", "remaining_calls", "score")

    def __init__(self) -> None:
        self.remaining_calls = Statistic()
        self.interarrival_ms = Statistic()
        self.output_tokens = Statistic()
        self.score = Mean()  # only its mean is ever read (SPEC section 5)

    def extend(self, observations: list[Queued]) -> None:
        """Fold observations in, in order (column-wise: the queue transposed in C)."""
        _, _, remaining_calls, gaps, tokens, scores, units = zip(*observations, strict=True)
        remaining = self.remaining_calls.pending
        remaining += remaining_calls
        if None in gaps:
            self.interarrival_ms.pending += [gap for gap in gaps if gap is not None]
        else:
            self.interarrival_ms.pending += gaps
        self.output_tokens.pending += tokens
        self.score.add_fast(units, scores)  # exact: any order, any split
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
        group = cls.__new__(cls)
        interarrival, output, remaining, score = data  # in __slots__ order
        group.interarrival_ms = Statistic.load(interarrival)
        group.output_tokens = Statistic.load(output)
        group.remaining_calls = Statistic.load(remaining)
        group.score = Mean.load(score)
        return group

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StatGroup) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__
        )


class NodeStats:
    """Statistics of one trie node: per call index, and across all indices.

    `add` only queues the observation; the queue is folded into the groups when they are
    read (or once it is `FOLD_OBSERVATIONS` long), a column at a time, which costs far less
    than four appends into four groups per observation on the hot path. Reading only the
    across-indices group (the hints, several times per trie) folds the queue into that
    group alone and keeps it for the per-index groups: one larger batch for those later.
    """

    __slots__ = ("_any_folded", "_any_index", "_by_index", "_queued", "high")

    def __init__(self) -> None:
        self._any_index = StatGroup()
        self._by_index: dict[int, StatGroup] = {}
        self._queued: list[Queued] = []
        self._any_folded = 0  # how many queued observations `_any_index` already holds
        #: the highest call index observed; indices are 1..high, so also how many
        #: per-call-index predictions the node has (queued observations included)
        self.high = 0

    def add(self, obs: Queued) -> None:
        queued = self._queued
        queued.append(obs)
        if len(queued) >= FOLD_OBSERVATIONS:
            self._fold()

    @property
    def any_index(self) -> StatGroup:
        queued, folded = self._queued, self._any_folded
        if len(queued) > folded:
            self._any_index.extend(queued[folded:] if folded else queued)
            self._any_folded = len(queued)
        return self._any_index

    @property
    def by_index(self) -> dict[int, StatGroup]:
        self._fold()
        return self._by_index

    def _fold(self) -> None:
        queued, folded = self._queued, self._any_folded
        if not queued:
            return
        self._queued, self._any_folded = [], 0
        if len(queued) > folded:
            self._any_index.extend(queued[folded:] if folded else queued)
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
        self.high = max(self.high, other.high)

    def dump(self) -> list[Any]:
        by_index = sorted(self.by_index.items())  # canonical: by call index
        return [self.any_index.dump(), [[i, g.dump()] for i, g in by_index]]

    @classmethod
    def load(cls, data: list[Any]) -> NodeStats:
        node = cls.__new__(cls)
        node._queued, node._any_folded = [], 0
        node._any_index = StatGroup.load(data[0])
        node._by_index = {i: StatGroup.load(g) for i, g in data[1]}
        node.high = max(node._by_index, default=0)
        return node

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NodeStats)
            and self.any_index == other.any_index
            and self.by_index == other.by_index
        )


class AgentState:
    """Everything learned for one agent; `learn` folds in one run (SPEC section 4) after
    scoring it (SPEC 10): the statistics, and the recent accuracy of its hints."""

    __slots__ = ("_scorer", "children", "recent", "root", "runs")

    def __init__(self) -> None:
        self.runs = 0
        self.root = NodeStats()
        #: the root's children by call name (a name with "/" is still one node)
        self.children: dict[str, NodeStats] = {}
        self.recent = RecentAccuracy()
        self._scorer: Scorer | None = None  # built on the first run scored

    @property
    def node_count(self) -> int:
        """Distinct trie nodes, the root included."""
        return 1 + len(self.children)

    @property
    def prediction_count(self) -> int:
        """Per-call-index predictions of the whole trie (every node's indices 1..high)."""
        return self.root.high + sum(node.high for node in self.children.values())

    def size_after(self, run: Run) -> tuple[int, int]:
        """The trie's (nodes, per-call-index predictions) once `run` is learned."""
        per_name: dict[str, int] = {}
        for call in run.calls:
            if call.kind == "llm" and call.ended_at is not None:
                per_name[call.name] = per_name.get(call.name, 0) + 1
        if not per_name:
            return self.node_count, self.prediction_count
        children = self.children
        nodes = self.node_count + sum(name not in children for name in per_name)
        added = max(0, max(per_name.values()) - self.root.high)
        for name, count in per_name.items():
            node = children.get(name)
            have = 0 if node is None else node.high
            if count > have:
                added += count - have
        return nodes, self.prediction_count + added

    def learn(self, run: Run, config: LearnerConfig) -> Learned:
        """Score the run's LLM calls against this state (unless `config.evaluate` is off),
        then fold the run in (unconditionally: duplicates are the caller's to skip). The
        observations returned, folded into another state, have the same effect (`fold`)."""
        observations = observe_run(run, config)
        self.runs += 1
        if not config.evaluate:
            self._scorer = None  # its predictors would miss this run
            self._queue(observations, units_of([o[5] for o in observations]))
            return Learned(observations, [], False)
        return self._score_and_fold(observations, config.scale)

    def _score_and_fold(self, observations: list[CallObservation], scale: int | None) -> Learned:
        scorer = self._scorer
        if scorer is None:
            scorer = self._scorer = Scorer(self)
        scores = scorer.score(self, observations)
        sensitivity = [o[5] for o in observations]
        units = units_of(sensitivity)
        self._queue(observations, units)
        flipped = scorer.learn_scores(units, sensitivity, scale)
        if scores and scores[0].source != "none":  # a run's calls are all served, or none
            self.recent.extend(map(recent_pair, scores))
        return Learned(observations, scores, flipped)

    def fold(
        self,
        observations: Iterable[CallObservation],
        runs: int,
        recent: Iterable[Pair] | None = None,
    ) -> None:
        """Apply the observations of `runs` runs (as `learn` returned them, in order) and
        what those runs added to the recent accuracy: `recent`, the (covered, osl error)
        pairs of their scored calls, or else scored again here against this state (the same
        pairs when this state is the one they were learned on: a snapshot and the deltas
        before them)."""
        if recent is None:
            run: list[CallObservation] = []
            for observation in observations:
                run.append(observation)
                if observation[2] == 0:  # no remaining calls: a run's last LLM call
                    self._score_and_fold(run, None)
                    run = []
            if run:
                raise ValueError("observations end inside a run (remaining_calls never 0)")
        else:
            self._scorer = None  # its predictors would miss these observations
            observations = list(observations)
            self._queue(observations, units_of([o[5] for o in observations]))
            self.recent.extend(recent)
        self.runs += runs

    def _queue(self, observations: list[CallObservation], units: list[int | None]) -> None:
        """Queue observations at the root and their nodes, with their scores in units."""
        root = self.root
        high = root.high
        children = self.children
        # NodeStats.add inlined (two calls per observation): queue, fold once long enough
        for observation, unit in zip(observations, units, strict=True):
            obs = observation + (unit,)  # noqa: RUF005 (faster)
            queued = root._queued
            queued.append(obs)
            if len(queued) >= FOLD_OBSERVATIONS:
                root._fold()
            node = children.get(obs[0])
            if node is None:
                node = children[obs[0]] = NodeStats()
            queued = node._queued
            queued.append(obs)
            if len(queued) >= FOLD_OBSERVATIONS:
                node._fold()
            index = obs[1]
            if index > node.high:
                node.high = index
                if index > high:
                    high = index
        root.high = high

    def merge(self, other: AgentState) -> AgentState:
        """Fold a state learned from other runs into this one, and return this one. Scores
        depend on the order runs were learned in, so the recent accuracy is only this
        state's followed by the other's (the statistics are exactly those of all runs)."""
        self.runs += other.runs
        self.root.merge(other.root)
        for name, node in other.children.items():
            self.children.setdefault(name, NodeStats()).merge(node)
        self.recent.extend(other.recent.pairs)
        self._scorer = None
        return self

    def to_bytes(self) -> bytes:
        """Compact canonical form: a small header, then the statistics and the recent
        accuracy as JSON."""
        children = {n: s.dump() for n, s in sorted(self.children.items())}
        body = orjson.dumps([self.runs, self.root.dump(), children, self.recent.dump()])
        return _HEADER.pack(_FORMAT_VERSION, len(body)) + body

    @classmethod
    def from_bytes(cls, blob: bytes) -> AgentState:
        """Read `to_bytes` output, also formats 2 (no recent accuracy: an empty one) and 1
        (whose run ids are ignored: `legacy_run_ids`)."""
        try:
            version, length = _HEADER.unpack_from(blob)
            if version not in (1, 2, _FORMAT_VERSION):
                raise StateFormatError(f"unknown agent state format version {version}")
            start = _HEADER.size
            runs, root, children, *recent = orjson.loads(blob[start : start + length])
            if len(recent) > 1:
                raise ValueError("more parts than a state has")
            state = cls()
            state.runs = runs
            state.root = NodeStats.load(root)
            state.children = {name: NodeStats.load(data) for name, data in children.items()}
            if recent:  # formats 1 and 2 have none
                state.recent = RecentAccuracy.load(recent[0])
        except StateFormatError:
            raise
        except (ValueError, TypeError, KeyError, struct.error) as exc:
            raise StateFormatError(f"unreadable agent state: {exc}") from None
        return state

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AgentState)
            and self.runs == other.runs
            and self.root == other.root
            and self.children == other.children
            and self.recent == other.recent
        )

    def __repr__(self) -> str:
        return f"AgentState(runs={self.runs}, nodes={self.node_count})"


def legacy_run_ids(blob: bytes) -> bytes:
    """The run ids a format-1 state value carried after its statistics (b"" for format 2)."""
    version, length = _HEADER.unpack_from(blob)
    return blob[_HEADER.size + length :] if version == 1 else b""
