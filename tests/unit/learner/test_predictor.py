"""A Predictor's numbers are its group's published metrics, sample after sample."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.learner.backoff import Parent, own_p90, rank_table
from worker.learner.nodes import StatGroup
from worker.learner.predictor import Predictor
from worker.learner.rounding import round_half_away

Sample = tuple[int, int, int | None]  # output tokens, remaining calls, interarrival ms


def observe(group: StatGroup, samples: list[Sample]) -> None:
    """Fold samples into a group as a node folds its queue (score 0.5, in 2**-128 units)."""
    if samples:
        group.extend([("n", 1, r, gap, y, 0.5, 1 << 127) for y, r, gap in samples])


def published(group: StatGroup) -> tuple[int, float, float, float | None]:
    """What the trie shows for the group: round(p90) and p50 of output tokens, the means."""
    tokens = group.output_tokens.metrics()
    gaps = group.interarrival_ms
    return (
        round_half_away(tokens["p90"]),
        tokens["p50"],
        group.remaining_calls.mean,
        gaps.mean if gaps.count else None,
    )


sample = st.tuples(
    st.one_of(st.integers(0, 60), st.integers(0, 200_000), st.sampled_from([7, 1500])),
    st.integers(0, 30),
    st.none() | st.integers(-500, 90_000),
)


@settings(max_examples=150, deadline=None)
@given(samples=st.lists(sample, min_size=90, max_size=320), start=st.integers(0, 160))
def test_values_follow_the_group_sample_by_sample(samples: list[Sample], start: int) -> None:
    """From a group's statistics (exact or a sketch), then one added sample at a time, across
    the exact limit and through new buckets on either side of each percentile's cursor."""
    group = StatGroup()
    observe(group, samples[:start])
    predictor = Predictor.of(group)
    assert predictor.values == published(group) or not samples[:start]
    for one in samples[start:]:
        observe(group, [one])
        predictor.add(*one)
        assert predictor.values == published(group)
    assert (predictor.keys is None) == (len(samples) <= 100)


def test_an_empty_predictor_has_no_prediction_until_its_first_sample() -> None:
    predictor = Predictor()
    assert predictor.count == 0
    predictor.add(40, 2, None)
    assert predictor.values == (40, 40.0, 2.0, None)
    predictor.add(61, 1, 30)  # p50 50.5, p90 40 + 21 * 0.9 = 58.9: osl 59
    assert predictor.values == (59, 50.5, 1.5, 30.0)


@settings(max_examples=100, deadline=None)
@given(samples=st.lists(sample, min_size=1, max_size=320), start=st.integers(0, 160))
def test_a_parent_follows_its_group_sample_by_sample(samples: list[Sample], start: int) -> None:
    """A back-off `Parent` gives the numbers its group's statistics give (back-off p90 and
    flag, p50 and means), from the statistics then one added sample at a time."""
    ranks = rank_table(1.0)
    group = StatGroup()
    observe(group, samples[:start])
    parent = Parent.of(group)
    for one in samples[start:]:
        observe(group, [one])
        parent.add(*one)
        own = own_p90(group.output_tokens, ranks)
        assert own is not None and (parent.p90(ranks), parent.beyond(ranks)) == own
        assert parent.values(7) == (7, *Predictor.of(group).values[1:])
