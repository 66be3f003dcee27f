"""A counter and a histogram for the metrics the record loop updates on every record.

prometheus_client's Counter and Histogram take a lock per update (a histogram two, after a
Python loop over its buckets): a few microseconds per record, several percent of a
worker's time. These are updated from the event loop only, and read (rendered) there too,
so plain numbers need no lock. They export exactly the samples prometheus_client's own
classes do (`_total` and `_created`; `_bucket` per bound, `_count`, `_sum`, `_created`).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import INF, floatToGoString

#: how prometheus_client writes a bucket's bound (`le`) (typed here: the library's is not)
_go_string: Callable[[float], str] = floatToGoString


class LoopCounter:
    """A Prometheus counter without labels, updated from the event loop only."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name.removesuffix("_total")  # as prometheus_client names a Counter
        self.documentation = documentation
        self.value = 0
        self.created = time.time()
        registry.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> list[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        metric.add_sample(self.name + "_total", {}, float(self.value))
        metric.add_sample(self.name + "_created", {}, self.created)
        return [metric]

    def describe(self) -> list[Metric]:
        return self.collect()


class LoopHistogram:
    """A Prometheus histogram without labels, updated from the event loop only."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or not bounds:
            raise ValueError("histogram buckets must be given in increasing order")
        if bounds[-1] != INF:
            bounds.append(INF)
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        self.labels = [{"le": _go_string(bound)} for bound in bounds]
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self.created = time.time()
        registry.register(self)

    def observe(self, amount: float) -> None:
        # the first bound >= amount: the bucket prometheus_client's `amount <= bound` picks
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def collect(self) -> list[Metric]:
        metric = Metric(self.name, self.documentation, "histogram")
        total = 0.0
        for labels, count in zip(self.labels, self.counts, strict=True):
            total += count
            metric.add_sample(self.name + "_bucket", dict(labels), total)
        metric.add_sample(self.name + "_count", {}, total)
        if self.bounds[0] >= 0:
            metric.add_sample(self.name + "_sum", {}, self.sum)
        metric.add_sample(self.name + "_created", {}, self.created)
        return [metric]

    def describe(self) -> list[Metric]:
        return self.collect()


class LoopLabelledCounter:
    """A Prometheus counter with one label of known values, updated from the event loop
    only (as LoopCounter)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        values: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.label = label
        self.values = dict.fromkeys(values, 0)
        self.created = time.time()
        registry.register(self)

    def inc(self, value: str, amount: int = 1) -> None:
        self.values[value] += amount

    def collect(self) -> list[Metric]:
        metric = Metric(self.name, self.documentation, "counter")
        for value, count in self.values.items():
            metric.add_sample(self.name + "_total", {self.label: value}, float(count))
            metric.add_sample(self.name + "_created", {self.label: value}, self.created)
        return [metric]

    def describe(self) -> list[Metric]:
        return self.collect()
