"""The gateway's Prometheus metrics (own registry, `agent_hints_gateway_*`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from worker.client.resolution import SKIP_REASONS, SOURCES

ROUTES = ("chat_completions", "completions", "other")
#: hint-adding work is in the tens of microseconds; a few buckets reach the tail
ADDED_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5)


class CountsByLabel:
    """`inc(*labels)` on a labelled counter, each child looked up once: `labels()` checks
    and locks on every call, a cost on the per-request path."""

    __slots__ = ("_children", "_counter")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._children: dict[tuple[str, ...], Any] = {}

    def inc(self, *labels: str) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._counter.labels(*labels)
        child.inc()


class GatewayMetrics:
    """Requests by route and status, hints by source, skips, added time, view state."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter(
            "agent_hints_gateway_requests",
            "Requests answered, by route (chat_completions, completions, other) and HTTP status",
            ["route", "status"],
            registry=r,
        )
        self.hints = Counter(
            "agent_hints_gateway_hints",
            "Hint-eligible requests (agent header, chat or completions) by hint source",
            ["source"],
            registry=r,
        )
        self.requests_by = CountsByLabel(self.requests)
        self.hints_by = CountsByLabel(self.hints)
        for source in SOURCES:
            self.hints.labels(source)
        self.skipped = Counter(
            "agent_hints_gateway_entries_skipped",
            "Learned entries passed over (max_age, min_runs: staleness fallbacks; accuracy: "
            "below the coverage floor; invalid_trie)",
            ["reason"],
            registry=r,
        )
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        self.passed_unchanged = Counter(
            "agent_hints_gateway_unchanged",
            "Hint-eligible requests forwarded as received (invalid_json, not_object, too_large)",
            ["reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "agent_hints_gateway_upstream_errors",
            "Upstream failures answered by the gateway (unreachable, timeout, broken)",
            ["kind"],
            registry=r,
        )
        self.added = Histogram(
            "agent_hints_gateway_added_seconds",
            "Gateway time per request outside the upstream call: reading the body, resolving "
            "and rendering hints, relaying the response headers",
            buckets=ADDED_BUCKETS,
            registry=r,
        )
        self.view_agents = Gauge(
            "agent_hints_gateway_view_agents",
            "Agents in the hints view, by topic (hints, tries)",
            ["topic"],
            registry=r,
        )
        self.view_lag = Gauge(
            "agent_hints_gateway_view_lag_records",
            "Records on agent-hints / agent-tries not read yet",
            registry=r,
        )
        self.view_ready = Gauge(
            "agent_hints_gateway_view_ready", "1 once the view is loaded", registry=r
        )
        self.view_invalid = Gauge(
            "agent_hints_gateway_view_invalid_records",
            "Records skipped by the view (not the published shape), by topic",
            ["topic"],
            registry=r,
        )
        self.runs_tracked = Gauge(
            "agent_hints_gateway_runs_tracked", "Runs whose call counts are held", registry=r
        )

    def bind(
        self,
        agents: Callable[[str], int],
        lag: Callable[[], int],
        ready: Callable[[], bool],
        invalid: Callable[[str], int],
        runs: Callable[[], int],
    ) -> None:
        """Read the view's and call context's state at scrape time."""
        for topic in ("hints", "tries"):
            self.view_agents.labels(topic).set_function(partial(agents, topic))
            self.view_invalid.labels(topic).set_function(partial(invalid, topic))
        self.view_lag.set_function(lag)
        self.view_ready.set_function(lambda: float(ready()))
        self.runs_tracked.set_function(runs)

    def render(self) -> bytes:
        return generate_latest(self.registry)
