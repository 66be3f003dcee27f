"""One running statistic: exact count and mean, percentiles exact up to 100 samples.

Past `EXACT_LIMIT` samples the values move into a bucket sketch whose size depends on the
range of values, never on their number. Buckets are one unit wide below `LINEAR_LIMIT`
(integer data stays exact there) and 1% wide in relative terms above it (a sketch in the
style of DDSketch). Reading a percentile finds the samples at the exact ranks SPEC
section 5 interpolates between, each within 0.5 or 1% of its true value, so the result
stays within SPEC's bound (2% relative or 1.0 absolute). Bucket counts add up, so merged
statistics equal the statistic of all samples whatever the split.

Sums are exact (SPEC 5: "exact mean", `worker.learner.exact_sums`), so a mean never depends
on the order of additions, the batching or how the samples were split between states. The
serialized form is canonical (exact samples sorted, sums in lowest terms): equal statistics
give equal bytes.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from collections.abc import Iterable
from itertools import accumulate
from typing import Any, Final, cast

from mypy_extensions import mypyc_attr

from worker.learner.exact_sums import (
    FULL_SHIFT,
    Number,
    add_exact,
    dump_exact,
    exact_mean,
    has_none,
    load_exact,
    sum_exact,
)

EXACT_LIMIT: Final = 100
FOLD_BATCH: Final = 256  # pending samples past the exact limit are folded in batches this big
LINEAR_LIMIT: Final = 49.5
RELATIVE_ERROR: Final = 0.01
_GAMMA: Final = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_INV_LOG_GAMMA: Final = 1 / math.log(_GAMMA)
_LOG_BASE: Final = round(LINEAR_LIMIT + 0.5)  # first key of the logarithmic buckets (50)
_MID: Final = 2 * _GAMMA / (1 + _GAMMA)  # bucket [lo, lo*gamma) is represented by lo*_MID
PERCENTILES = (50, 90, 95)
_NO_COUNTS: list[int] = []  # never modified (see Statistic.counts)
#: a batch of at least 1/4 as many samples as the sketch has buckets is counted into a dict
#: (in C) rather than inserted by binary searches (a Python loop)
_DICT_MERGE_RATIO: Final = 4


def bucket_key(value: Number) -> int:
    """The sketch bucket a value falls in; keys sort in the same order as values."""
    magnitude = -value if value < 0 else value
    if magnitude < LINEAR_LIMIT:
        return math.floor(value + 0.5)
    key = _LOG_BASE + int(math.log(magnitude / LINEAR_LIMIT) * _INV_LOG_GAMMA)
    return -key if value < 0 else key


def bucket_value(key: int) -> float:
    """The value that represents every sample in a bucket (within 0.5 or 1% of each)."""
    magnitude = -key if key < 0 else key
    if magnitude < _LOG_BASE:
        return float(key)
    value = LINEAR_LIMIT * _GAMMA ** (magnitude - _LOG_BASE) * _MID
    return -value if key < 0 else value


#: memos of the two bucket mappings: samples repeat (token counts, gaps in ms, call counts)
_MEMO_LIMIT: Final = 1 << 18
_BUCKET_KEYS: Final[dict[Number, int]] = {}
_BUCKET_VALUES: Final[dict[int, float]] = {}


def key_of(value: Number) -> int:
    """bucket_key, memoised (up to `_MEMO_LIMIT` distinct values)."""
    key = _BUCKET_KEYS.get(value)
    if key is None:
        key = bucket_key(value)
        if len(_BUCKET_KEYS) < _MEMO_LIMIT:
            _BUCKET_KEYS[value] = key
    return key


def value_of(key: int) -> float:
    """bucket_value, memoised: the same few hundred keys are read over and over."""
    value = _BUCKET_VALUES.get(key)
    if value is None:
        value = _BUCKET_VALUES[key] = bucket_value(key)
    return value


def interpolate(sorted_values: list[Number], percentile: float) -> float:
    """SPEC section 5's linear-interpolation percentile of sorted samples."""
    low, high, frac = _rank_split(len(sorted_values), percentile)
    below = sorted_values[low]
    return float(below + (sorted_values[high] - below) * frac)


def _rank_split(count: int, percentile: float) -> tuple[int, int, float]:
    """The two sample indexes SPEC's rule interpolates between, and the weight of the upper."""
    rank = (count - 1) * percentile / 100
    return math.floor(rank), math.ceil(rank), rank - math.floor(rank)


#: per sample count up to the exact limit: the (low, high, fraction) of each percentile
EXACT_RANKS = [
    [_rank_split(n, p) for p in PERCENTILES] if n else [] for n in range(EXACT_LIMIT + 1)
]
#: the same, flat and typed, which the compiled `metrics` reads without boxing:
#: (l50, h50, f50, l90, h90, f90, l95, h95, f95)
_FLAT_RANKS: Final[list[tuple[int, int, float, int, int, float, int, int, float]]] = [
    (*ranks[0], *ranks[1], *ranks[2]) if ranks else (0, 0, 0.0, 0, 0, 0.0, 0, 0, 0.0)
    for ranks in EXACT_RANKS
]


def _between(samples: list[Number], low: int, high: int, fraction: float) -> float:
    """SPEC 5's interpolation between two sorted samples, in doubles: the same value as in
    their own types (the integers samples hold are far below 2**53, so exact as doubles)."""
    below = _double(samples[low])
    return below + (_double(samples[high]) - below) * fraction


def _double(value: Number) -> float:
    """`float(value)` without a call through `float`'s constructor (compiled: a conversion)."""
    return float(value) if isinstance(value, int) else value


def sketch_p90(keys: list[int], counts: list[int], count: int) -> float:
    """The p90 of a bucket sketch of `count` samples as `Statistic._sketch_percentiles`
    gives it, finding its ranks' buckets from the top: a tenth of the samples lie above
    them, usually a few buckets, not the whole sketch (the scorer's back-off parents keep
    sketches of their own, `backoff.Parent`)."""
    rank = (count - 1) * 90 / 100
    low = int(rank)
    at = len(counts) - 1  # the bucket holding the sample of index `low` (0-based):
    before = count - counts[at]  # the one with `before <= low < before + counts[at]`
    while before > low:
        at -= 1
        before -= counts[at]
    below = value_of(keys[at])
    fraction = rank - low
    if fraction:
        above = below if low + 1 < before + counts[at] else value_of(keys[at + 1])
        below += (above - below) * fraction
    return below


def _int_sum(values: list[Number]) -> int | None:
    """The sum of `values` when they are all ints (exact), else None: a native loop, where
    `sum` is a builtin looked up and called for a few dozen values."""
    total = 0
    for value in values:
        if not isinstance(value, int):
            return None
        total += value
    return total


#: acyclic (here and on the other per-agent classes): they hold numbers and lists of numbers,
#: never a cycle, so compiled they are not tracked by the cyclic GC, which at 10,000 agents
#: walked hundreds of thousands of them per collection for nothing (docs/performance.md)
@mypyc_attr(acyclic=True)
class Statistic:
    """Count, sum and samples: raw while there are at most 100, else a bucket sketch.

    `add` only appends to `pending`; pending values are folded into the sketch in batches
    (`compact`), which keeps the hot path to one list append. Every reading and the
    serialized form treat pending values exactly as if they had been folded one by one,
    so a statistic's result never depends on when folding happened. The sketch is two
    parallel lists, bucket keys (sorted) and their counts, so that a percentile is one
    cumulative sum and a binary search.
    """

    __slots__ = (
        "_metrics",
        "counts",
        "folded_count",
        "folded_shift",
        "folded_sum",
        "keys",
        "pending",
    )

    def __init__(self) -> None:
        self._metrics: dict[str, Any] | None = None  # cached until the count changes
        self.pending: list[Number] = []
        self.keys: list[int] | None = None  # the sketch's bucket keys, sorted (None: exact)
        #: samples in each bucket, aligned with keys (a shared empty list while exact: one
        #: object fewer per statistic for the garbage collector to walk)
        self.counts: list[int] = _NO_COUNTS
        self.folded_count = 0
        self.folded_sum = 0  # exact sum of the folded samples: folded_sum / 2**folded_shift
        self.folded_shift = 0

    def add(self, value: Number) -> None:
        self.pending.append(value)

    @property
    def count(self) -> int:
        return self.folded_count + len(self.pending)

    @property
    def exact_sum(self) -> tuple[int, int]:
        """The exact sum of every sample (units, shift)."""
        pending = self.pending
        if not pending:  # all folded (a sketch after `compact`, as the hints read it)
            return self.folded_sum, self.folded_shift
        total = _int_sum(pending)
        if total is not None and not self.folded_shift:
            return self.folded_sum + total, 0
        return add_exact(self.folded_sum, self.folded_shift, *sum_exact(pending))

    @property
    def mean(self) -> float:
        """The exact mean, correctly rounded (never depends on the order of the samples)."""
        return exact_mean(*self.exact_sum, self.count)

    @property
    def exact(self) -> bool:
        """True while every sample is kept (at most EXACT_LIMIT of them)."""
        return self.keys is None and len(self.pending) <= EXACT_LIMIT

    def compact(self) -> None:
        """Fold pending values into the sketch once the statistic is past the exact limit."""
        pending = self.pending
        if self.exact or not pending:
            return
        keyed = list(map(_BUCKET_KEYS.get, pending))
        if has_none(keyed):
            keyed = [key_of(v) if k is None else k for k, v in zip(keyed, pending, strict=True)]
        self._add_keys(cast(list[int], keyed))
        self.folded_count += len(pending)
        self.folded_sum, self.folded_shift = add_exact(
            self.folded_sum, self.folded_shift, *sum_exact(pending)
        )
        self.pending = []

    def _add_keys(self, keyed: list[int]) -> None:
        """Count one sample in each bucket of `keyed` (duplicates allowed).

        Three ways to the same lists, the cheapest for the sizes at hand: a new sketch is
        counted and sorted in C; many samples for the sketch's size are counted into a dict
        of the buckets (in C; its values stay in key order unless a key is new); a few are
        inserted one distinct key at a time (a binary search each)."""
        keys = self.keys
        if keys is None:
            counted = Counter(keyed)
            self.keys = keys = sorted(counted)
            self.counts = list(map(counted.__getitem__, keys))
        elif len(keyed) * _DICT_MERGE_RATIO >= len(keys):
            merged = dict(zip(keys, self.counts, strict=True))
            _count_elements(merged, keyed)
            if len(merged) == len(keys):
                self.counts = list(merged.values())
            else:
                self.keys = keys = sorted(merged)
                self.counts = list(map(merged.__getitem__, keys))
        else:
            self._add_buckets(Counter(keyed).items())

    def _add_buckets(self, buckets: Iterable[tuple[int, int]]) -> None:
        if self.keys is None:  # the sketch starts: lists of its own
            self.keys, self.counts = [], []
        keys, counts = self.keys, self.counts
        for key, n in buckets:
            i = bisect_left(keys, key)
            if i < len(keys) and keys[i] == key:
                counts[i] += n
            else:
                keys.insert(i, key)
                counts.insert(i, n)
        self.keys = keys

    def merge(self, other: Statistic) -> None:
        """Fold another statistic in: afterwards self describes both sample sets."""
        self.pending.extend(other.pending)
        if other.keys is not None:
            self.folded_count += other.folded_count
            self.folded_sum, self.folded_shift = add_exact(
                self.folded_sum, self.folded_shift, other.folded_sum, other.folded_shift
            )
            self._add_buckets(zip(other.keys, other.counts, strict=True))
        self.compact()

    def percentiles(self) -> tuple[float, ...]:
        """p50, p90, p95 (zeros when there is no sample)."""
        metrics = self.metrics()
        return metrics["p50"], metrics["p90"], metrics["p95"]

    def _sketch_percentiles(self) -> tuple[float, ...]:
        """Interpolate between the estimated samples at each percentile's two ranks."""
        keys: list[int] = self.keys  # type: ignore[assignment]
        cumulative = list(accumulate(self.counts))
        last = self.folded_count - 1
        memo = _BUCKET_VALUES.get  # `value_of` inlined: its memo nearly always has it
        results = []
        for p in PERCENTILES:
            rank = last * p / 100
            low = int(rank)
            key = keys[bisect_right(cumulative, low)]
            below = memo(key)
            if below is None:
                below = value_of(key)
            fraction = rank - low
            if fraction:
                key = keys[bisect_right(cumulative, low + 1)]
                above = memo(key)
                if above is None:
                    above = value_of(key)
                below += (above - below) * fraction
            results.append(below)
        return tuple(results)

    def metrics(self) -> dict[str, Any]:
        """The SPEC `Metrics` object of this statistic.

        Cached until the count changes (samples are only ever added); the dict is shared,
        so callers must not modify it. `percentiles` and `mean` fused into one pass (this
        runs ~90 times per trie).
        """
        pending = self.pending
        count = self.folded_count + len(pending)
        cached = self._metrics
        if cached is not None and cached["sample_count"] == count:
            return cached
        if self.keys is None and count <= EXACT_LIMIT:
            if not count:
                metrics = {"sample_count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0}
                self._metrics = metrics
                return metrics
            pending.sort()  # in place: order is irrelevant and re-sorting is then cheap
            l50, h50, f50, l90, h90, f90, l95, h95, f95 = _FLAT_RANKS[count]
            total = _int_sum(pending)  # nothing folded yet: the sum of the samples is the sum
            metrics = {
                "sample_count": count,
                "mean": self.mean if total is None else total / count,
                "p50": _between(pending, l50, h50, f50),
                "p90": _between(pending, l90, h90, f90),
                "p95": _between(pending, l95, h95, f95),
            }
        else:
            self.compact()
            p50, p90, p95 = self._sketch_percentiles()
            metrics = {
                "sample_count": count,
                "mean": exact_mean(self.folded_sum, self.folded_shift, count),  # all folded
                "p50": p50,
                "p90": p90,
                "p95": p95,
            }
        self._metrics = metrics
        return metrics

    def p90(self) -> float:
        """`metrics()["p90"]`, without building the rest (for the hints and back-off)."""
        pending = self.pending
        count = self.folded_count + len(pending)
        cached = self._metrics
        if cached is not None and cached["sample_count"] == count:
            return cast(float, cached["p90"])
        if self.keys is None and count <= EXACT_LIMIT:
            if not count:
                return 0.0
            pending.sort()
            _, _, _, low, high, fraction, _, _, _ = _FLAT_RANKS[count]
            return _between(pending, low, high, fraction)
        self.compact()  # past the exact limit: the sketch's p90 alone
        return self._sketch_p90()

    def _sketch_p90(self) -> float:
        """The p90 `_sketch_percentiles` gives (`sketch_p90` of the folded sketch)."""
        return sketch_p90(self.keys, self.counts, self.folded_count)  # type: ignore[arg-type]

    # -- canonical compact form: [sorted samples] while exact, else
    # -- [count, exact sum, sorted keys, their counts]

    def dump(self) -> list[Any]:
        pending = self.pending
        if self.keys is None and len(pending) <= EXACT_LIMIT:
            pending.sort()  # canonical: the same samples give the same bytes
            return [pending]
        self.compact()
        total = dump_exact(self.folded_sum, self.folded_shift)
        return [self.folded_count, total, self.keys, self.counts]

    @classmethod
    def load(cls, data: list[Any]) -> Statistic:
        stat = cls()
        if len(data) == 1:
            stat.pending = data[0]
        else:
            stat.pending = []
            stat.folded_count, total, keys, counts = data
            if len(keys) != len(counts):
                raise ValueError("sketch keys and counts differ in length")
            stat.folded_sum, stat.folded_shift = load_exact(total)
            stat.keys, stat.counts = keys, counts
        return stat

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Statistic):
            return NotImplemented
        self.compact()
        other.compact()
        return (
            self.count == other.count
            and add_exact(*self.exact_sum, 0, FULL_SHIFT)
            == add_exact(*other.exact_sum, 0, FULL_SHIFT)
            and sorted(self.pending) == sorted(other.pending)
            and self.keys == other.keys
            and self.counts == other.counts
        )

    def __repr__(self) -> str:
        return f"Statistic(count={self.count}, mean={self.mean:.6g})"
