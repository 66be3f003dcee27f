"""Kendall's tau-b, exact, in O(n log n) (Knight's algorithm): SPEC 10's `osl_tau`.

Pairs are sorted by (x, y); then concordant minus discordant pairs is
`n0 - n1 - n2 + n3 - 2 * swaps`, where n0 counts all pairs, n1 the pairs tied in x, n2 those
tied in y, n3 those tied in both, and `swaps` the pairs that y leaves out of order in that
order (its inversions). Pure Python, no numpy: values are first replaced by their ranks, so
that sorting and counting work on small ints with loops that run in C.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import accumulate, compress

#: values counted by insertion into a sorted list at a time (inside one chunk or run)
_BLOCK = 256


def tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two equally long sequences; None when undefined (fewer than two
    pairs, or every x or every y equal)."""
    n = len(x)
    if n != len(y):
        raise ValueError(f"tau_b: {n} x values but {len(y)} y values")
    if n < 2:
        return None
    x_ranks, _ = ranks(x)
    y_ranks, y_distinct = ranks(y)
    keys = [a * y_distinct + b for a, b in zip(x_ranks, y_ranks, strict=True)]
    pairs = n * (n - 1) // 2
    x_ties, y_ties = _tied_pairs(x_ranks), _tied_pairs(y_ranks)
    denominator = (pairs - x_ties) * (pairs - y_ties)
    if denominator == 0:
        return None
    joint_ties = _tied_pairs(keys)
    keys.sort()  # by x, then by y
    swaps = inversions(list(map(y_distinct.__rmod__, keys)), y_distinct)
    return (pairs - x_ties - y_ties + joint_ties - 2 * swaps) / math.sqrt(denominator)


def ranks(values: Iterable[float]) -> tuple[list[int], int]:
    """Each value's rank among the distinct values (equal values, equal ranks), and how many
    distinct values there are."""
    values = list(values)
    distinct = sorted(set(values))
    rank_of = dict(zip(distinct, range(len(distinct)), strict=True))
    return list(map(rank_of.__getitem__, values)), len(distinct)


def _tied_pairs(values: Iterable[int]) -> int:
    """How many pairs of `values` are equal."""
    return sum(c * (c - 1) // 2 for c in Counter(values).values() if c > 1)


def inversions(values: list[int], distinct: int) -> int:
    """Pairs i < j with values[i] > values[j], for ranks 0 <= value < distinct.

    With few distinct values (the usual case: token counts repeat), by chunks against a
    count of the earlier values per rank; else by merge sort."""
    if distinct * 16 <= len(values):
        return _by_counts(values, distinct)
    return _by_merges(values)


def _sorted_block(values: list[int]) -> tuple[list[int], int]:
    """The values sorted, and their inversions (each counted as it is inserted)."""
    ordered: list[int] = []
    count = 0
    for i, value in enumerate(values):
        at = bisect_right(ordered, value)
        count += i - at  # the earlier values greater than this one
        ordered.insert(at, value)
    return ordered, count


def _by_counts(values: list[int], distinct: int) -> int:
    count = 0
    seen = [0] * distinct  # earlier values per rank
    chunk = max(_BLOCK, distinct // 4)
    for start in range(0, len(values), chunk):
        part = values[start : start + chunk]
        # earlier values greater than each rank r
        above = list(accumulate(reversed(seen)))[::-1]  # the counts of rank r and above
        greater = [*above[1:], 0]
        count += sum(map(greater.__getitem__, part)) + _sorted_block(part)[1]
        for rank, n in Counter(part).items():
            seen[rank] += n
    return count


def _by_merges(values: list[int]) -> int:
    count = 0
    runs = []
    for start in range(0, len(values), _BLOCK):
        ordered, within = _sorted_block(values[start : start + _BLOCK])
        count += within
        runs.append([v << 1 for v in ordered])  # doubled: the low bit tags the right run
    is_right, untag, tag = (1).__and__, (-2).__and__, (1).__or__
    while len(runs) > 1:
        merged = []
        for left, right in zip(runs[0::2], runs[1::2], strict=False):
            both = left + list(map(tag, right))
            both.sort()  # two sorted runs: one linear merge; ties put left values first
            # the q-th right value at position p is preceded by p - q left values, none of
            # them greater: the other left values are its inversions
            positions = sum(compress(range(len(both)), map(is_right, both)))
            not_greater = positions - len(right) * (len(right) - 1) // 2
            count += len(left) * len(right) - not_greater
            merged.append(list(map(untag, both)))
        if len(runs) % 2:
            merged.append(runs[-1])
        runs = merged
    return count
