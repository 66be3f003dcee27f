"""The lock-free loop metrics export exactly what prometheus_client's own classes do."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from worker.observability.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5)
#: bounds themselves, values between, above the last bound, zero and negative
AMOUNTS = [0.0, 1e-4, 1.5e-4, 2.5e-4, 0.003, 0.5, 0.75, 12.0, 7e-5, 0.05, 0.05000001, -1.0]


def rendered(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def test_counter_renders_as_prometheus_client_does() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopCounter("runs_learned", "Runs learned", ours)
    reference = Counter("runs_learned", "Runs learned", registry=theirs)
    loop.created = reference._created  # the one value that differs: the creation time
    assert rendered(ours) == rendered(theirs)
    for amount in (1, 1, 5):
        loop.inc(amount)
        reference.inc(amount)
    assert rendered(ours) == rendered(theirs)


@pytest.mark.parametrize("amounts", [[], AMOUNTS[:-1], AMOUNTS])
def test_histogram_renders_as_prometheus_client_does(amounts: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("processing_seconds", "Time to process", BUCKETS, ours)
    reference = Histogram("processing_seconds", "Time to process", buckets=BUCKETS, registry=theirs)
    loop.created = reference._created
    for amount in amounts:
        loop.observe(amount)
        reference.observe(amount)
    assert rendered(ours) == rendered(theirs)


def test_histogram_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("h", "h", (0.5, 0.1), CollectorRegistry())
