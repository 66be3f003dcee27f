"""Back-off (the `adaptive` rule set): upper percentiles of few samples lean on the parent's.

A p90 interpolated from n samples (SPEC 5) is optimistic: the next sample exceeds it with
probability about (0.1 n + 0.9) / (n + 1), 0.17 at n = 10 (docs/accuracy.md). With k
pseudo-samples of the parent, a statistic of n exact samples x(1) <= ... <= x(n) takes as its
q-th percentile (q = 0.9 and 0.95)

    x(j), j = ceil(q (n + k)),   while j <= n;   else max(x(n), the parent's q-th percentile)

At k = 1 this is the conformal rank: for exchangeable samples the next one is at most x(j)
with probability at least q. The parent of a call-index prediction is its node's any-index
prediction, that of a node's any-index prediction (and of the root's per-index ones) the
root's any-index prediction; the root's has none (then x(n)). A statistic past the exact
limit (a sketch, n > 100) keeps SPEC 5's percentiles: there the two differ by less than a
sample's rank. The median and the means are SPEC 5's.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from worker.learner.bisection import bisect_after
from worker.learner.predictor import Values, group_counts
from worker.learner.stats import (
    EXACT_LIMIT,
    EXACT_RANKS,
    Statistic,
    key_of,
    sketch_p90,
    value_of,
)

if TYPE_CHECKING:
    from worker.learner.nodes import StatGroup

#: the percentiles the back-off replaces, as exact fractions (so ranks have no rounding)
_UPPER = (Fraction(9, 10), Fraction(19, 20))
#: (p90, p95) of a statistic
Uppers = tuple[float, float]
#: per sample count 0..EXACT_LIMIT: the ranks (1-based) of p90 and p95
RankTable = tuple[tuple[int, int], ...]


@lru_cache(maxsize=16)
def rank_table(pseudo_samples: float) -> RankTable:
    """`ceil(q (n + k))` for q = 0.9, 0.95 and every n up to the exact limit."""
    k = Fraction(pseudo_samples)
    return tuple(
        (math.ceil(_UPPER[0] * (n + k)), math.ceil(_UPPER[1] * (n + k)))
        for n in range(EXACT_LIMIT + 1)
    )


def uppers(stat: Statistic, parent: Uppers | None, ranks: RankTable) -> Uppers | None:
    """The statistic's (p90, p95) under back-off; None without samples. Past the exact
    limit, SPEC 5's. Sorts the exact samples in place (as reading percentiles does)."""
    if not stat.count:
        return None
    if not stat.exact:
        metrics = stat.metrics()
        return metrics["p90"], metrics["p95"]
    samples = stat.pending
    samples.sort()
    n = len(samples)
    top = samples[-1]
    j90, j95 = ranks[n]
    return (
        float(samples[j90 - 1] if j90 <= n else top if parent is None else max(top, parent[0])),
        float(samples[j95 - 1] if j95 <= n else top if parent is None else max(top, parent[1])),
    )


def own_p90(stat: Statistic, ranks: RankTable) -> tuple[float, bool] | None:
    """The statistic's own part of its back-off p90: (the sample of rank j, False), or
    (its largest sample, True) when j is beyond them (the parent's then counts too); SPEC 5's
    p90 past the exact limit; None without samples. For scoring, which reads only p90."""
    if not stat.count:
        return None
    if not stat.exact:
        return stat.p90(), False
    samples = stat.pending
    samples.sort()
    n = len(samples)
    rank = ranks[n][0]
    return (float(samples[rank - 1]), False) if rank <= n else (float(samples[-1]), True)


_NO_COUNTS: Final[list[int]] = []


@mypyc_attr(acyclic=True)
class Parent:
    """One node's any-index group as the adaptive scorer keeps it, sample by sample: its
    output tokens (a sorted list while exact, then the statistic's bucket sketch) and the
    sums behind its means. It is the back-off parent of the node's per-index groups (`p90`),
    read nearly every run of its name when one of them is short of samples, and the
    prediction a new call index of the node falls back to (`values`); from the statistics,
    each read would fold the node's queue (all four statistics) first."""

    __slots__ = ("count", "counts", "gap_count", "gap_sum", "keys", "remaining_sum", "samples")

    def __init__(self) -> None:
        self.count = self.remaining_sum = self.gap_sum = self.gap_count = 0
        self.samples: list[int] = []  # the output tokens, sorted, while exact
        self.keys: list[int] | None = None  # the sketch's buckets, sorted (None: exact)
        self.counts: list[int] = _NO_COUNTS

    @classmethod
    def of(cls, group: StatGroup) -> Parent:
        """From a group's statistics (its output tokens folded into their sketch when past
        the limit), as `Predictor.of` reads them."""
        parent = cls()
        tokens = group.output_tokens
        parent.count, parent.remaining_sum, parent.gap_sum, parent.gap_count = group_counts(group)
        if tokens.exact:
            parent.samples = sorted(tokens.pending)  # type: ignore[arg-type]
        else:
            tokens.compact()
            parent.keys, parent.counts = list(tokens.keys or ()), list(tokens.counts)
        return parent

    def add(self, value: Any, remaining_calls: int, interarrival_ms: int | None) -> None:
        """One more sample of the group (output tokens: an int, kept as the object it is)."""
        count = self.count = self.count + 1
        self.remaining_sum += remaining_calls
        if interarrival_ms is not None:
            self.gap_sum += interarrival_ms
            self.gap_count += 1
        if count <= EXACT_LIMIT:
            samples = self.samples
            samples.insert(bisect_after(samples, value), value)
            return
        keys = self.keys
        if keys is None:
            self._start_sketch(value)
            return
        key = key_of(value)
        j = bisect_after(keys, key - 1)  # bisect_left: keys are whole numbers
        counts = self.counts
        if j == len(keys) or keys[j] != key:
            keys.insert(j, key)
            counts.insert(j, 1)
        else:
            counts[j] += 1

    def _start_sketch(self, value: Any) -> None:
        """Past the limit: the sketch of every sample so far (keys grow with the values, so
        the sorted samples give the sorted keys, each run of equal keys one bucket)."""
        samples = self.samples
        samples.insert(bisect_after(samples, value), value)
        keys: list[int] = []
        counts: list[int] = []
        for sample in samples:
            key = key_of(sample)
            if keys and keys[-1] == key:
                counts[-1] += 1
            else:
                keys.append(key)
                counts.append(1)
        self.keys, self.counts, self.samples = keys, counts, []

    def values(self, osl: int) -> Values:
        """The group's prediction numbers (`Predictor.values`) with this `osl`: its p50 of
        output tokens as the statistic interpolates it, and its two means."""
        count = self.count
        gaps = self.gap_count
        return osl, self._p50(), self.remaining_sum / count, self.gap_sum / gaps if gaps else None

    def _p50(self) -> float:
        """`Statistic.percentiles`' p50 of the output tokens (the same ranks, buckets and
        float operations)."""
        count = self.count
        if self.keys is None:
            low, high, fraction = EXACT_RANKS[count][0]
            samples = self.samples
            below = samples[low]
            return float(below + (samples[high] - below) * fraction)
        keys = self.keys
        counts = self.counts
        rank = (count - 1) * 50 / 100
        low = int(rank)
        at = 0
        before = 0  # samples in the buckets before `at`
        while low >= before + counts[at]:
            before += counts[at]
            at += 1
        p50 = value_of(keys[at])
        if rank != low and low + 1 >= before + counts[at]:
            p50 += (value_of(keys[at + 1]) - p50) * (rank - low)
        return p50

    def p90(self, ranks: RankTable) -> float:
        """`own_p90`'s value of the group's output-token statistic (NaN without samples)."""
        count = self.count
        if not count:
            return math.nan
        if self.keys is None:
            rank = ranks[count][0]
            samples = self.samples
            return float(samples[rank - 1] if rank <= count else samples[count - 1])
        return sketch_p90(self.keys, self.counts, count)

    def beyond(self, ranks: RankTable) -> bool:
        """Whether the p90's rank is beyond the samples (`own_p90`'s flag: the parent's p90
        then counts too)."""
        count = self.count
        return self.keys is None and ranks[count][0] > count
