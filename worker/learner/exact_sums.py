"""Exact sums, and the mean built on them (SPEC 5: "exact mean").

An integer count of 2**-1074, the smallest positive double, holds any sum of finite floats
and ints without rounding, so a mean is the one correctly rounded quotient of the true sum,
whatever the order of additions, the batching or how the samples were split between
states, and a level (SPEC 5) read off a mean never depends on them either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mypy_extensions import mypyc_attr

Number = int | float

#: An exact sum is (units, shift): the value units / 2**shift. Ints sum with shift 0; a float
#: is a whole number of 2**-1074 (the smallest positive double), and of 2**-128 unless it is
#: tiny or very finely divided: sums of such (all scores, in practice) stay small ints.
FAST_SHIFT = 128
FULL_SHIFT = 1074
_I64 = 1 << 63


def has_none(values: Sequence[object]) -> bool:
    """`None in values`, by identity: `in` compares each int with None through both of
    their rich comparisons (compiled, this is a plain loop)."""
    return any(value is None for value in values)


def exact(value: Number) -> tuple[int, int]:
    """`value` as an exact sum (any int or finite float)."""
    if type(value) is int:
        return value, 0
    numerator, denominator = value.as_integer_ratio()  # denominator: a power of two
    bits = denominator.bit_length() - 1
    shift = FAST_SHIFT if bits <= FAST_SHIFT else FULL_SHIFT
    return numerator << (shift - bits), shift


def fast_units(value: float) -> int | None:
    """`value` in units of 2**-128, or None when it is not a whole number of them."""
    numerator, denominator = value.as_integer_ratio()
    bits = denominator.bit_length() - 1
    return numerator << (FAST_SHIFT - bits) if bits <= FAST_SHIFT else None


def add_exact(units: int, shift: int, more: int, more_shift: int) -> tuple[int, int]:
    """The exact sum of two exact sums."""
    if shift == more_shift:
        return units + more, shift
    if shift < more_shift:
        return (units << (more_shift - shift)) + more, more_shift
    return units + (more << (shift - more_shift)), shift


def sum_exact(values: list[Number]) -> tuple[int, int]:
    """The exact sum of `values` (ints are summed as ints: exact and fast)."""
    total = sum(values)
    if type(total) is int:
        return total, 0
    units, shift = 0, 0
    for value in values:
        units, shift = add_exact(units, shift, *exact(value))
    return units, shift


def exact_mean(units: int, shift: int, count: int) -> float:
    """The correctly rounded mean (int / int true division rounds correctly in Python)."""
    return units / (count << shift) if count else 0.0


def dump_exact(units: int, shift: int) -> int | str:
    """A canonical JSON form of an exact sum: an int when whole and in int64 range, else
    the string "N*2^E" with N odd (orjson encodes integers up to 64 bits only)."""
    if units == 0:
        return 0
    zeros = (units & -units).bit_length() - 1
    numerator, exponent = units >> zeros, zeros - shift
    if exponent >= 0 and -_I64 <= numerator << exponent < _I64:
        return numerator << exponent
    return f"{numerator}*2^{exponent}"


def load_exact(data: Any) -> tuple[int, int]:
    """Inverse of dump_exact; also reads the plain numbers older state formats stored."""
    if isinstance(data, str):
        numerator, _, power = data.partition("*2^")
        try:
            value, exponent = int(numerator), int(power)
        except ValueError:
            raise ValueError(f"not an exact sum: {data!r}") from None
        if exponent >= 0:
            return value << exponent, 0
        for shift in (FAST_SHIFT, FULL_SHIFT):
            if exponent >= -shift:
                return value << (shift + exponent), shift
        raise ValueError(f"not an exact sum: {data!r}")
    if isinstance(data, bool) or not isinstance(data, int | float):
        raise ValueError(f"not an exact sum: {data!r}")
    try:
        return exact(data)
    except (OverflowError, ValueError):  # inf, nan
        raise ValueError(f"not an exact sum: {data!r}") from None


@mypyc_attr(acyclic=True)
class Mean:
    """Count and exact sum only: for the sensitivity score, whose percentiles nobody reads."""

    __slots__ = ("count", "shift", "units")

    def __init__(self, count: int = 0, units: int = 0, shift: int = FAST_SHIFT) -> None:
        self.count = count
        self.units = units  # the exact sum is units / 2**shift
        self.shift = shift

    def add(self, value: Number) -> None:
        self.count += 1
        self.units, self.shift = add_exact(self.units, self.shift, *exact(value))

    def add_fast(self, units: Sequence[int | None], values: Sequence[float]) -> None:
        """Add `values`, given as `fast_units` of each (None: not a whole number of them)."""
        self.count += len(values)
        if has_none(units):
            for value in values:
                self.units, self.shift = add_exact(self.units, self.shift, *exact(value))
        else:
            total: int = sum(units)  # type: ignore[arg-type]
            self.units, self.shift = add_exact(self.units, self.shift, total, FAST_SHIFT)

    @property
    def mean(self) -> float:
        """The exact mean, correctly rounded."""
        return exact_mean(self.units, self.shift, self.count)

    def compact(self) -> None:
        """Nothing to fold; here so every statistic of a group answers the same calls."""

    def merge(self, other: Mean) -> None:
        self.count += other.count
        self.units, self.shift = add_exact(self.units, self.shift, other.units, other.shift)

    def dump(self) -> list[Any]:
        return [self.count, dump_exact(self.units, self.shift)]

    @classmethod
    def load(cls, data: list[Any]) -> Mean:
        count, total = data
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"not a sample count: {count!r}")
        return cls(count, *load_exact(total))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mean):
            return NotImplemented
        return self.count == other.count and dump_exact(self.units, self.shift) == dump_exact(
            other.units, other.shift
        )

    def __repr__(self) -> str:
        return f"Mean(count={self.count}, mean={self.mean:.6g})"
