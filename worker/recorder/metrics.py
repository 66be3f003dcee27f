"""The recorder's Prometheus metrics, on the registry its host process exposes.

Counters (`agent_hints_recorder_runs_*_total`) and spool gauges are shared by every recorder
of a process on the same registry (the gauges sum over the live ones), so making a second
recorder never fails with "duplicated timeseries".
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

PREFIX = "agent_hints_recorder_"
#: reasons a run is counted in runs_failed_total
FAILED_REASONS = ("spool_full", "too_large", "rejected_by_broker")


class SpoolState(Protocol):
    """What the gauges read from each live recorder."""

    def spool_runs(self) -> int: ...
    def spool_bytes(self) -> int: ...
    def pending_runs(self) -> int: ...
    def spool_limit_bytes(self) -> int: ...


class RecorderMetrics:
    """The metric objects of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._live: weakref.WeakSet[SpoolState] = weakref.WeakSet()
        self.runs_recorded = Counter(
            PREFIX + "runs_recorded",
            "Finished runs the recorder accepted (each is sent or kept in the spool).",
            registry=registry,
        )
        self.runs_sent = Counter(
            PREFIX + "runs_sent",
            "Runs the broker acknowledged (acks=all).",
            registry=registry,
        )
        self.runs_spooled = Counter(
            PREFIX + "runs_spooled",
            "Runs that had to wait in the spool: the broker was unreachable or did not "
            "acknowledge them on the first attempt, or they were unsent at close.",
            registry=registry,
        )
        self.runs_failed = Counter(
            PREFIX + "runs_failed",
            "Finished runs NOT recorded: spool full or record too large (the caller got an "
            "error), or refused for good by the broker (kept under the spool's rejected/).",
            ["reason"],
            registry=registry,
        )
        for reason in FAILED_REASONS:
            self.runs_failed.labels(reason)
        self.spool_damaged_files = Counter(
            PREFIX + "spool_damaged_files",
            "Spool files found damaged at start-up (intact runs kept; file moved to corrupt/).",
            registry=registry,
        )
        self._gauge(registry, "spool_runs", "Runs on disk the broker has not acknowledged.",
                    lambda s: s.spool_runs())  # fmt: skip
        self._gauge(registry, "spool_bytes", "Size of the spool's segment files.",
                    lambda s: s.spool_bytes())  # fmt: skip
        self._gauge(registry, "spool_limit_bytes", "max_spool_bytes: recording fails beyond it.",
                    lambda s: s.spool_limit_bytes())  # fmt: skip
        self._gauge(registry, "pending_runs",
                    "Runs recorded and not yet acknowledged (in memory or on disk).",
                    lambda s: s.pending_runs())  # fmt: skip

    def _gauge(
        self,
        registry: CollectorRegistry,
        name: str,
        documentation: str,
        read: Callable[[SpoolState], int],
    ) -> None:
        gauge = Gauge(PREFIX + name, documentation, registry=registry)
        live = self._live
        gauge.set_function(lambda: float(sum(read(state) for state in list(live))))

    def track(self, state: SpoolState) -> None:
        self._live.add(state)

    def untrack(self, state: SpoolState) -> None:
        self._live.discard(state)


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, RecorderMetrics] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def metrics_for(registry: CollectorRegistry | None = REGISTRY) -> RecorderMetrics:
    """The metrics on `registry` (made on first use); None gives a private, unexposed set."""
    if registry is None:
        return RecorderMetrics(CollectorRegistry(auto_describe=True))
    with _lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = RecorderMetrics(registry)
        return metrics
