"""Kendall's tau-b (Knight's O(n log n) algorithm) against the O(n^2) definition."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.learner.kendall import _by_counts, _by_merges, inversions, tau_b


def brute_tau_b(x: list[float], y: list[float]) -> float | None:
    """Straight from the definition: every pair, concordant, discordant or tied."""
    concordant = discordant = x_only = y_only = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx and dy:
                if dx == dy:
                    concordant += 1
                else:
                    discordant += 1
            elif dx:
                x_only += 1  # tied in y only
            elif dy:
                y_only += 1  # tied in x only
    untied_x = concordant + discordant + x_only
    untied_y = concordant + discordant + y_only
    if not untied_x or not untied_y:
        return None
    return (concordant - discordant) / math.sqrt(untied_x * untied_y)


def test_a_small_case_worked_by_hand() -> None:
    # pairs (x, y): (1, 1) (2, 3) (2, 2) (3, 3)
    # (1,1)-(2,3) C, (1,1)-(2,2) C, (1,1)-(3,3) C, (2,3)-(2,2) tied in x,
    # (2,3)-(3,3) tied in y, (2,2)-(3,3) C: 4 concordant, 0 discordant, 6 pairs,
    # 1 tied in x, 1 tied in y: tau-b = 4 / sqrt((6 - 1) * (6 - 1)) = 0.8
    assert tau_b([1, 2, 2, 3], [1, 3, 2, 3]) == pytest.approx(0.8, abs=1e-15)


def test_reversed_order_is_minus_one_and_undefined_cases_are_none() -> None:
    assert tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert tau_b([1, 2, 3], [1, 2, 3]) == 1.0
    assert tau_b([], []) is None
    assert tau_b([5.0], [1]) is None
    assert tau_b([2, 2, 2], [1, 2, 3]) is None  # no pair untied in x
    with pytest.raises(ValueError, match="2 x values but 1 y values"):
        tau_b([1, 2], [1])


@settings(max_examples=300, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.integers(0, 6).map(lambda v: v * 0.5), st.integers(0, 9)), max_size=120
    )
)
def test_matches_the_definition_with_many_ties(pairs: list[tuple[float, int]]) -> None:
    x = [p[0] for p in pairs]
    y = [p[1] for p in pairs]
    want = brute_tau_b(x, y)
    got = tau_b(x, y)
    assert (got is None) == (want is None)
    if want is not None:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("distinct", [3, 40, 5000])
def test_matches_the_definition_on_random_data(distinct: int) -> None:
    """Few distinct values (counted by rank) and many (counted by merges) alike."""
    rng = random.Random(distinct)
    for size in (2, 17, 300, 900):
        x = [rng.randrange(distinct) / 4 for _ in range(size)]
        y = [rng.randrange(distinct) for _ in range(size)]
        want = brute_tau_b(x, y)
        assert want is not None
        assert tau_b(x, y) == pytest.approx(want, rel=1e-12, abs=1e-15)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(0, 30), max_size=600))
def test_both_inversion_counts_match_the_definition(values: list[int]) -> None:
    n = len(values)
    want = sum(values[i] > values[j] for i in range(n) for j in range(i + 1, n))
    assert inversions(values, 31) == want  # by rank counts or by merges, by size
    assert _by_counts(values, 31) == _by_merges(values) == want
