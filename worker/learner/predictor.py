"""The numbers SPEC 10 scores a call against, for one statistics group, kept current.

A prediction's `osl` (rounded p90 of output tokens), p50 and the two means change with every
sample its group learns, and scoring reads them once per LLM call, before the call's own
sample goes in: recomputing them from the group's `Statistic`s each time (a sort, or a sum
over the sketch's buckets) would cost more than learning. A `Predictor` mirrors one group's
numbers instead and updates them in O(1) per sample: a sorted list while the group is exact
(at most 100 samples), then the same bucket sketch as `Statistic`, with a cursor per
percentile on the bucket that holds its rank. The values are the ones the trie publishes,
bit for bit (the same ranks, buckets and float operations as `worker.learner.stats`).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from itertools import accumulate
from typing import TYPE_CHECKING, Final, Self

from mypy_extensions import mypyc_attr

from worker.learner.bisection import bisect_after
from worker.learner.stats import (
    EXACT_LIMIT,
    EXACT_RANKS,
    Statistic,
    key_of,
    value_of,
)

if TYPE_CHECKING:
    from worker.learner.nodes import StatGroup

#: (osl, p50 of output tokens, mean remaining calls, mean interarrival ms or None)
Values = tuple[int, float, float, float | None]
_NO_COUNTS: Final[list[int]] = []
#: per sample count up to the exact limit: (l50, h50, f50, l90, h90, f90), flat
_RANKS: Final[list[tuple[int, int, float, int, int, float]]] = [
    (*ranks[0], *ranks[1]) if ranks else (0, 0, 0.0, 0, 0, 0.0) for ranks in EXACT_RANKS
]


@mypyc_attr(acyclic=True)
class Predictor:
    """One group's prediction numbers (`values`), updated by `add` one sample at a time.

    Exact while it holds at most `EXACT_LIMIT` samples, a sketch beyond (as a statistic of
    one group never holds more samples exactly)."""

    __slots__ = (
        "at50",
        "at90",
        "before50",
        "before90",
        "count",
        "counts",
        "gap_count",
        "gap_sum",
        "keys",
        "remaining_sum",
        "tokens",
        "values",
    )

    def __init__(self) -> None:
        """An empty group's (no prediction until it learns a sample)."""
        self.count = self.remaining_sum = self.gap_sum = self.gap_count = 0
        #: the samples, sorted, while exact (the same int objects as the statistics' own)
        self.tokens: list[int] = []
        self.keys: list[int] | None = None
        #: the sketch's counts (shared and never changed while exact: one object less to
        #: allocate, and for the garbage collector to walk, per group)
        self.counts: list[int] = _NO_COUNTS
        #: while a sketch: the bucket holding each percentile's lower rank, and how many
        #: samples the buckets before it hold
        self.at50 = self.before50 = self.at90 = self.before90 = 0
        self.values: Values = (0, 0.0, 0.0, None)

    @classmethod
    def of(cls, group: StatGroup) -> Self:
        """From a group's statistics (its queued observations folded in)."""
        predictor = cls()
        tokens = group.output_tokens
        sums = group_counts(group)
        predictor.count, predictor.remaining_sum, predictor.gap_sum, predictor.gap_count = sums
        if tokens.exact:
            predictor.tokens = sorted(tokens.pending)  # type: ignore[arg-type]
            predictor.values = predictor._exact_values()
        else:
            tokens.compact()
            predictor._start_sketch(list(tokens.keys or ()), list(tokens.counts))
        return predictor

    def add(self, output_tokens: int, remaining_calls: int, interarrival_ms: int | None) -> None:
        """Learn one sample (an observation of this group's node and call index)."""
        count = self.count = self.count + 1
        remaining = self.remaining_sum = self.remaining_sum + remaining_calls
        gaps = self.gap_count
        if interarrival_ms is not None:
            self.gap_sum += interarrival_ms
            gaps = self.gap_count = gaps + 1
        if count <= EXACT_LIMIT:  # exact (a sorted list): `_exact_values` inlined
            samples = self.tokens
            samples.insert(bisect_after(samples, output_tokens), output_tokens)
            l50, h50, f50, l90, h90, f90 = _RANKS[count]
            low = samples[l50]
            p50 = float(low + (samples[h50] - low) * f50)
            low = samples[l90]
            p90 = float(low + (samples[h90] - low) * f90)
            gap = self.gap_sum / gaps if gaps else None
            self.values = int(p90 + 0.5), p50, remaining / count, gap
        elif self.keys is not None:
            self._add_to_sketch(key_of(output_tokens))
        else:  # the statistic turns into a sketch here too
            insort(self.tokens, output_tokens)
            counted = Counter(map(key_of, self.tokens))
            keys = sorted(counted)
            self._start_sketch(keys, list(map(counted.__getitem__, keys)))
            self.tokens = []

    def _means(self) -> tuple[float, float | None]:
        gaps = self.gap_count
        return self.remaining_sum / self.count, self.gap_sum / gaps if gaps else None

    def _exact_values(self) -> Values:
        """From the sorted samples, as `Statistic.percentiles` interpolates them."""
        samples = self.tokens
        if not samples:
            return 0, 0.0, 0.0, None
        l50, h50, f50, l90, h90, f90 = _RANKS[len(samples)]
        low = samples[l50]
        p50 = float(low + (samples[h50] - low) * f50)
        low = samples[l90]
        p90 = float(low + (samples[h90] - low) * f90)
        remaining, gap = self._means()  # (a splat of the pair would build a tuple)
        return int(p90 + 0.5), p50, remaining, gap  # p90 >= 0: int(+ 0.5) rounds half up

    def _start_sketch(self, keys: list[int], counts: list[int]) -> None:
        self.keys, self.counts = keys, counts
        cumulative = list(accumulate(counts))
        last = self.count - 1  # ranks as Statistic._sketch_percentiles takes them
        self.at50 = bisect_left(cumulative, int(last * 50 / 100) + 1)  # the bucket holding it
        self.before50 = cumulative[self.at50] - counts[self.at50]
        self.at90 = bisect_left(cumulative, int(last * 90 / 100) + 1)
        self.before90 = cumulative[self.at90] - counts[self.at90]
        self.values = self._sketch_values()

    def _add_to_sketch(self, key: int) -> None:
        """Count the sample in its bucket and move each cursor onto its rank's bucket: the
        rank grows by at most one, so each moves by a bucket at most, in practice. (A new
        bucket at the cursor's index leaves a valid cursor: it starts where the old one did.)"""
        keys: list[int] = self.keys  # type: ignore[assignment]
        counts = self.counts
        j = bisect_after(keys, key - 1)  # bisect_left: keys are whole numbers
        new = j == len(keys) or keys[j] != key
        if new:
            keys.insert(j, key)
            counts.insert(j, 1)
        else:
            counts[j] += 1
        last = self.count - 1
        at, before = self.at50, self.before50
        if j < at:  # a sample before the cursor's bucket (a new bucket shifts it along)
            before += 1
            at += new
        low = int(last * 50 / 100)
        while low < before:
            at -= 1
            before -= counts[at]
        while low >= before + counts[at]:
            before += counts[at]
            at += 1
        self.at50, self.before50 = at, before
        at, before = self.at90, self.before90
        if j < at:
            before += 1
            at += new
        low = int(last * 90 / 100)
        while low < before:
            at -= 1
            before -= counts[at]
        while low >= before + counts[at]:
            before += counts[at]
            at += 1
        self.at90, self.before90 = at, before
        self.values = self._sketch_values()

    def sketch_p90(self) -> float:
        """The p90 itself (not rounded) while a sketch, as `_sketch_values` computes it."""
        keys: list[int] = self.keys  # type: ignore[assignment]
        rank = (self.count - 1) * 90 / 100
        low = int(rank)
        at = self.at90
        p90 = value_of(keys[at])
        if rank != low and low + 1 >= self.before90 + self.counts[at]:
            p90 += (value_of(keys[at + 1]) - p90) * (rank - low)
        return p90

    def _sketch_values(self) -> Values:
        """As `Statistic._sketch_percentiles` interpolates between the two ranks' buckets
        (when the next rank is in the same bucket it adds (below - below) * fraction:
        nothing, so that case is skipped)."""
        keys: list[int] = self.keys  # type: ignore[assignment]
        counts = self.counts
        last = self.count - 1
        rank = last * 50 / 100
        low = int(rank)
        at = self.at50
        p50 = value_of(keys[at])
        if rank != low and low + 1 >= self.before50 + counts[at]:
            p50 += (value_of(keys[at + 1]) - p50) * (rank - low)
        rank = last * 90 / 100
        low = int(rank)
        at = self.at90
        p90 = value_of(keys[at])
        if rank != low and low + 1 >= self.before90 + counts[at]:
            p90 += (value_of(keys[at + 1]) - p90) * (rank - low)
        remaining, gap = self._means()
        return int(p90 + 0.5), p50, remaining, gap


def group_counts(group: StatGroup) -> tuple[int, int, int, int]:
    """A group's sample count and the sums behind its means (remaining calls, gaps, how many
    gaps), as a `Predictor` and a back-off `Parent` start from them."""
    gaps = group.interarrival_ms
    return (
        group.output_tokens.count,
        int_sum(group.remaining_calls),
        int_sum(gaps),
        gaps.count,
    )


def int_sum(stat: Statistic) -> int:
    """The exact sum of a statistic of whole numbers (their sums carry no fraction)."""
    units, shift = stat.exact_sum
    if shift and units % (1 << shift):
        raise ValueError("a statistic of whole numbers holds a fraction")
    return units >> shift
