"""Statistic properties: exact to 100 samples, bounded error and size beyond, mergeable."""

from __future__ import annotations

import itertools
import random
import statistics
from fractions import Fraction

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.learner.stats import EXACT_LIMIT, Statistic, interpolate

values = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**32 - 1),
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
)


def exact_percentile(samples: list[float], p: int) -> float:
    """An independent reference: the stdlib's 'inclusive' quantiles use the same rule."""
    if len(samples) == 1:
        return float(samples[0])
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1]


def within_bound(got: float, exact: float) -> bool:
    return abs(got - exact) <= max(0.02 * abs(exact), 1.0)


def stat_of(samples: list[float]) -> Statistic:
    stat = Statistic()
    for value in samples:
        stat.add(value)
    return stat


@given(st.lists(values, min_size=1, max_size=EXACT_LIMIT))
def test_percentiles_are_exact_up_to_100_samples(samples: list[float]) -> None:
    stat = stat_of(samples)
    for got, p in zip(stat.percentiles(), (50, 90, 95), strict=True):
        assert got == pytest.approx(exact_percentile(samples, p), rel=1e-9, abs=1e-6)
    assert stat.mean == pytest.approx(statistics.fmean(samples), rel=1e-9, abs=1e-6)
    assert stat.count == len(samples)


@given(st.lists(values, min_size=1, max_size=EXACT_LIMIT))
def test_exact_metrics_are_the_rule_in_the_samples_own_types_bit_for_bit(
    samples: list[float],
) -> None:
    """`metrics` interpolates in doubles; SPEC 5's rule computed in the samples' own types
    (`interpolate`) gives the same bits, and the mean is the correctly rounded one."""
    metrics = stat_of(samples).metrics()
    ordered = sorted(samples)
    for p in (50, 90, 95):
        assert metrics[f"p{p}"].hex() == interpolate(ordered, p).hex()
    assert metrics["mean"] == float(sum(map(Fraction, samples)) / len(samples))


def test_no_samples_gives_zeros() -> None:
    assert Statistic().metrics() == {
        "sample_count": 0,
        "mean": 0.0,
        "p50": 0.0,
        "p90": 0.0,
        "p95": 0.0,
    }


def test_interpolation_rule() -> None:
    assert interpolate([1, 2, 3, 4], 50) == 2.5
    assert interpolate([10, 20], 90) == 19.0


SKEWED = {
    "lognormal tokens": lambda r: int(r.lognormvariate(6, 1.5)),
    "pareto gaps": lambda r: r.paretovariate(1.2) * 100,
    "bimodal": lambda r: r.choice((r.gauss(50, 5), r.gauss(4000, 400))),
    "small integers": lambda r: r.randint(0, 12),
    "scores": lambda r: r.random(),
    "negative gaps": lambda r: r.gauss(-800, 900),
    "huge range": lambda r: 10 ** r.uniform(-3, 9.6),
}


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(sorted(SKEWED)),
    count=st.integers(min_value=EXACT_LIMIT + 1, max_value=30_000),
    seed=st.integers(0, 2**32),
)
def test_large_skewed_inputs_stay_within_bounds(kind: str, count: int, seed: int) -> None:
    rng = random.Random(seed)
    samples = [SKEWED[kind](rng) for _ in range(count)]
    stat = stat_of(samples)
    for got, p in zip(stat.percentiles(), (50, 90, 95), strict=True):
        exact = exact_percentile(samples, p)
        assert within_bound(got, exact), f"{kind} p{p}: {got} vs exact {exact}"
    assert stat.mean == pytest.approx(statistics.fmean(samples), rel=1e-9, abs=1e-6)
    size = len(orjson.dumps(stat.dump()))
    assert size <= 12_000, f"{kind}: {size} bytes for {count} samples"


def test_size_does_not_grow_with_sample_count() -> None:
    rng = random.Random(7)
    stat = Statistic()
    sizes = []
    for _ in range(4):
        for _ in range(100_000):
            stat.add(int(rng.lognormvariate(6, 1)))
        sizes.append(len(orjson.dumps(stat.dump())))
    # the bucket count follows the range of values, not their number
    assert max(sizes) < 4_096 and sizes[-1] < sizes[0] * 1.2, sizes


@given(st.lists(values, max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_merge_is_independent_of_the_split(samples: list[float], cuts: list[int]) -> None:
    bounds = sorted({0, len(samples), *(min(c, len(samples)) for c in cuts)})
    merged = Statistic()
    for start, end in itertools.pairwise(bounds):
        merged.merge(stat_of(samples[start:end]))
    whole = stat_of(samples)
    assert merged == whole
    assert merged.percentiles() == whole.percentiles()


@given(st.lists(values, max_size=300))
def test_dump_and_load_round_trip(samples: list[float]) -> None:
    stat = stat_of(samples)
    loaded = Statistic.load(orjson.loads(orjson.dumps(stat.dump())))
    assert loaded == stat
    assert loaded.metrics() == stat.metrics()


@given(
    st.lists(st.lists(values, max_size=60), min_size=1, max_size=12),
    st.lists(st.booleans(), min_size=12, max_size=12),
)
def test_readings_between_additions_equal_a_fresh_reading(
    batches: list[list[float]], merge_instead: list[bool]
) -> None:
    """Percentiles read while samples keep arriving (the sketch's rank pointers move with
    them) equal those of a statistic that saw the same samples and is read only once."""
    live = Statistic()
    seen: list[float] = []
    for batch, by_merge in zip(batches, merge_instead, strict=False):
        if by_merge:
            live.merge(stat_of(batch))
        else:
            for value in batch:
                live.add(value)
        seen += batch
        assert live.percentiles() == stat_of(seen).percentiles()
        assert live == stat_of(seen)  # the same buckets, whichever way batches were counted


@pytest.mark.parametrize("batch", [1, 3, 40, 400])
def test_counting_batches_into_the_sketch_gives_the_buckets_of_one_batch(batch: int) -> None:
    """Small batches are inserted key by key, large ones counted into a dict (with and
    without new buckets): every way ends with the buckets of counting all at once."""
    rng = random.Random(batch)
    samples = [rng.choice([rng.randint(0, 60), rng.lognormvariate(6, 2)]) for _ in range(3000)]
    live = Statistic()
    for start in range(0, len(samples), batch):
        for value in samples[start : start + batch]:
            live.add(value)
        live.compact()
    whole = stat_of(samples)
    whole.compact()
    assert live.keys == whole.keys and live.counts == whole.counts
    assert live == whole and live.percentiles() == whole.percentiles()


def test_readings_stay_exact_as_new_buckets_open_below_and_above() -> None:
    """The sketch's rank pointers follow buckets inserted below, between and above them."""
    rng = random.Random(5)
    live = Statistic()
    seen: list[float] = []
    for low, high in [(1000, 1200), (60, 80), (5000, 9000), (300, 310), (-500, -50), (1, 40)]:
        for _ in range(3):
            batch = [rng.uniform(low, high) for _ in range(rng.randint(1, 90))]
            for value in batch:
                live.add(value)
            seen += batch
            assert live.percentiles() == stat_of(seen).percentiles()


@given(st.lists(values, min_size=1, max_size=600), st.integers(0, 600))
def test_p90_alone_is_the_metrics_p90(samples: list[float], fresh_at: int) -> None:
    """`p90` finds a sketch's ranks from the top; `metrics` from the bottom: the same value,
    bit for bit, at every count (read between additions as the hints read it)."""
    stat, fresh = Statistic(), Statistic()
    for i, sample in enumerate(samples, start=1):
        stat.add(sample)
        fresh.add(sample)
        if i % 37 == 0 or i == fresh_at or i == len(samples):
            copy = Statistic.load(orjson.loads(orjson.dumps(fresh.dump())))
            assert stat.p90() == copy.metrics()["p90"]
