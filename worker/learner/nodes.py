"""The statistics of one trie node (SPEC 4.6): per call index and across indices, each a
group of the four statistics a call is folded into. The agent's state
(`worker.learner.state`) holds one per node.
"""

from __future__ import annotations

from bisect import bisect_right
from operator import itemgetter
from typing import Any, Final, cast

from mypy_extensions import mypyc_attr

from worker.learner.exact_sums import FAST_SHIFT, Mean, Number, fast_units, has_none
from worker.learner.stats import FOLD_BATCH, Statistic

#: observations a node queues before folding them into its statistics (bounds memory)
FOLD_OBSERVATIONS: Final = 512
_call_index = itemgetter(1)
#: what a node queues: the observation's six fields, then its score in 2**-128 units (or None)
Queued = tuple[Any, ...]


_FAST_SCALE: Final = float(1 << FAST_SHIFT)


def units_of(values: list[float]) -> list[int | None]:
    """`fast_units` of each score, by a multiplication when all are whole numbers of
    2**-128 (scaling by a power of two is exact; the scores of a run nearly always are)."""
    units: list[int | None] = []
    for value in values:
        scaled = value * _FAST_SCALE
        if not scaled.is_integer():
            return list(map(fast_units, values))
        units.append(int(scaled))
    return units


@mypyc_attr(acyclic=True)
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
        # every queued tuple has the seven fields: no need for `strict`
        _, _, remaining_calls, gaps, tokens, scores, units = zip(*observations, strict=False)
        self.extend_columns(remaining_calls, gaps, tokens, scores, units)

    def extend_columns(
        self,
        remaining_calls: tuple[Number, ...],
        gaps: tuple[Number | None, ...],
        tokens: tuple[Number, ...],
        scores: tuple[float, ...],
        units: tuple[int | None, ...],
    ) -> None:
        """`extend` with the observations already transposed into their columns."""
        remaining = self.remaining_calls.pending
        remaining += remaining_calls
        if has_none(gaps):
            self.interarrival_ms.pending += [gap for gap in gaps if gap is not None]
        else:
            self.interarrival_ms.pending += cast(tuple[Number, ...], gaps)
        self.output_tokens.pending += tokens
        self.score.add_fast(units, scores)  # exact: any order, any split
        if len(remaining) >= FOLD_BATCH:  # remaining_calls gets every sample: the longest
            self.interarrival_ms.compact()
            self.output_tokens.compact()
            self.remaining_calls.compact()

    def merge(self, other: StatGroup) -> None:
        self.interarrival_ms.merge(other.interarrival_ms)
        self.output_tokens.merge(other.output_tokens)
        self.remaining_calls.merge(other.remaining_calls)
        self.score.merge(other.score)

    def dump(self) -> list[Any]:
        return [  # in __slots__ order
            self.interarrival_ms.dump(),
            self.output_tokens.dump(),
            self.remaining_calls.dump(),
            self.score.dump(),
        ]

    @classmethod
    def load(cls, data: list[Any]) -> StatGroup:
        group = cls()
        interarrival, output, remaining, score = data  # in __slots__ order
        group.interarrival_ms = Statistic.load(interarrival)
        group.output_tokens = Statistic.load(output)
        group.remaining_calls = Statistic.load(remaining)
        group.score = Mean.load(score)
        return group

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, StatGroup)
            and self.interarrival_ms == other.interarrival_ms
            and self.output_tokens == other.output_tokens
            and self.remaining_calls == other.remaining_calls
            and self.score == other.score
        )


@mypyc_attr(acyclic=True)
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
    def samples(self) -> int:
        """Calls the node learned (its queue included), without folding anything."""
        return self._any_index.output_tokens.count + len(self._queued) - self._any_folded

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
        # transposed once; each call index is then one slice of every column
        _, indices, remaining, gaps, tokens, scores, units = zip(*queued, strict=False)
        by_index = self._by_index
        start, stop = 0, len(indices)
        while start < stop:
            index = indices[start]
            end = bisect_right(indices, index, start)
            group = by_index.get(index)
            if group is None:
                group = by_index[index] = StatGroup()
            group.extend_columns(
                remaining[start:end],
                gaps[start:end],
                tokens[start:end],
                scores[start:end],
                units[start:end],
            )
            start = end

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
        node = cls()
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
