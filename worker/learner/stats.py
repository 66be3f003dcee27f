"""One running statistic: exact count and mean, percentiles exact up to 100 samples.

Past `EXACT_LIMIT` samples the values move into a bucket sketch whose size depends on the
range of values, never on their number. Buckets are one unit wide below `LINEAR_LIMIT`
(integer data stays exact there) and 1% wide in relative terms above it (a sketch in the
style of DDSketch). Reading a percentile finds the samples at the exact ranks SPEC
section 5 interpolates between, each within 0.5 or 1% of its true value, so the result
stays within SPEC's bound (2% relative or 1.0 absolute). Bucket counts add up, so merged
statistics equal the statistic of all samples whatever the split.
"""

from __future__ import annotations

import math
from typing import Any

EXACT_LIMIT = 100
LINEAR_LIMIT = 49.5
RELATIVE_ERROR = 0.01
_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_INV_LOG_GAMMA = 1 / math.log(_GAMMA)
_LOG_BASE = round(LINEAR_LIMIT + 0.5)  # first key of the logarithmic buckets (50)
_MID = 2 * _GAMMA / (1 + _GAMMA)  # bucket [lo, lo*gamma) is represented by lo*_MID
PERCENTILES = (50, 90, 95)

Number = int | float


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


def interpolate(sorted_values: list[Number], percentile: float) -> float:
    """SPEC section 5's linear-interpolation percentile of sorted samples."""
    rank = (len(sorted_values) - 1) * percentile / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    below = sorted_values[low]
    return float(below + (sorted_values[high] - below) * (rank - low))


class Statistic:
    """Count, sum and either the raw samples (at most 100) or a bucket sketch."""

    __slots__ = ("buckets", "count", "samples", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total: Number = 0
        self.samples: list[Number] | None = []
        self.buckets: dict[int, int] | None = None

    def add(self, value: Number) -> None:
        self.count += 1
        self.total += value
        samples = self.samples
        if samples is not None:
            samples.append(value)
            if len(samples) > EXACT_LIMIT:
                self._to_sketch()
        else:
            key = bucket_key(value)
            buckets = self.buckets
            buckets[key] = buckets.get(key, 0) + 1  # type: ignore[index,union-attr]

    def _to_sketch(self) -> None:
        buckets: dict[int, int] = {}
        for value in self.samples or ():
            key = bucket_key(value)
            buckets[key] = buckets.get(key, 0) + 1
        self.samples = None
        self.buckets = buckets

    def merge(self, other: Statistic) -> None:
        """Fold another statistic in: afterwards self describes both sample sets."""
        self.count += other.count
        self.total += other.total
        if self.samples is not None and other.samples is not None:
            self.samples.extend(other.samples)
            if len(self.samples) > EXACT_LIMIT:
                self._to_sketch()
            return
        if self.samples is not None:
            self._to_sketch()
        buckets = self.buckets
        assert buckets is not None
        if other.samples is not None:
            for value in other.samples:
                key = bucket_key(value)
                buckets[key] = buckets.get(key, 0) + 1
        else:
            for key, n in other.buckets.items():  # type: ignore[union-attr]
                buckets[key] = buckets.get(key, 0) + n

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentiles(self) -> tuple[float, ...]:
        """p50, p90, p95 (zeros when there is no sample)."""
        if not self.count:
            return (0.0,) * len(PERCENTILES)
        if self.samples is not None:
            ordered = sorted(self.samples)
            return tuple(interpolate(ordered, p) for p in PERCENTILES)
        return tuple(self._sketch_percentile(p) for p in PERCENTILES)

    def _sketch_percentile(self, percentile: float) -> float:
        rank = (self.count - 1) * percentile / 100
        low = math.floor(rank)
        below = self._value_at(low)
        above = self._value_at(math.ceil(rank))
        return below + (above - below) * (rank - low)

    def _value_at(self, index: int) -> float:
        """The (estimated) value of the `index`-th smallest sample, 0-based."""
        seen = 0
        for key in sorted(self.buckets):  # type: ignore[arg-type]
            seen += self.buckets[key]  # type: ignore[index]
            if seen > index:
                return bucket_value(key)
        raise IndexError(index)

    def metrics(self) -> dict[str, Any]:
        """The SPEC `Metrics` object of this statistic."""
        p50, p90, p95 = self.percentiles()
        return {"sample_count": self.count, "mean": self.mean, "p50": p50, "p90": p90, "p95": p95}

    # -- compact form: [count, total, samples] or [count, total, None, flat bucket pairs]

    def dump(self) -> list[Any]:
        if self.samples is not None:
            return [self.count, self.total, self.samples]
        flat: list[int] = []
        for key in sorted(self.buckets):  # type: ignore[arg-type]
            flat += (key, self.buckets[key])  # type: ignore[index]
        return [self.count, self.total, None, flat]

    @classmethod
    def load(cls, data: list[Any]) -> Statistic:
        stat = cls()
        stat.count, stat.total, stat.samples = data[0], data[1], data[2]
        if stat.samples is None:
            flat = data[3]
            stat.buckets = dict(zip(flat[::2], flat[1::2], strict=True))
        return stat

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Statistic):
            return NotImplemented
        mine = sorted(self.samples) if self.samples is not None else None
        theirs = sorted(other.samples) if other.samples is not None else None
        return (
            self.count == other.count
            and math.isclose(self.total, other.total, rel_tol=1e-12, abs_tol=1e-9)
            and mine == theirs
            and self.buckets == other.buckets
        )

    def __repr__(self) -> str:
        return f"Statistic(count={self.count}, mean={self.mean:.6g})"
