"""The fleet-wide accuracy of the hints (SPEC 10), counted as the worker scores each run it
learns: no per-agent labels (the hints record carries each agent's own recent accuracy).

A run is scored once, when it is learned: a duplicate is neither learned nor scored, so a
replayed run never counts twice.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from worker.learner.evaluation import SOURCES, Learned
from worker.observability.loop_metrics import LoopCounter, LoopHistogram, LoopLabelledCounter

OSL_ERROR_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
IAT_ERROR_BUCKETS = (10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class AccuracyMetrics:
    """`agent_hints_accuracy_*`: calls by source, osl coverage, error histograms, flips."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = LoopLabelledCounter(
            "agent_hints_accuracy_calls",
            "LLM calls scored against the hints a router had for them, by source (SPEC 10)",
            "source",
            SOURCES,
            registry,
        )
        self.covered = LoopCounter(
            "agent_hints_accuracy_osl_covered",
            "Served calls whose output tokens stayed within the osl they had",
            registry,
        )
        self.osl_error = LoopHistogram(
            "agent_hints_accuracy_osl_abs_error_tokens",
            "Served calls' |predicted p50 - output tokens|",
            OSL_ERROR_BUCKETS,
            registry,
        )
        self.iat_error = LoopHistogram(
            "agent_hints_accuracy_iat_abs_error_ms",
            "Served calls' |predicted interarrival mean - gap to the next call|, ms",
            IAT_ERROR_BUCKETS,
            registry,
        )
        self.flips = LoopCounter(
            "agent_hints_accuracy_level_flips",
            "Runs that changed their agent's default latency-sensitivity level",
            registry,
        )

    def observe(self, learned: Learned) -> None:
        """Count one learned run's scores."""
        calls = self.calls.values
        osl, iat = self.osl_error, self.iat_error
        covered = 0
        for score in learned.scores:
            calls[score.source] += 1
            if score.source == "none":
                continue
            covered += score.covered
            osl.observe(score.osl_error)
            if score.iat_error_ms is not None:
                iat.observe(score.iat_error_ms)
        self.covered.value += covered
        self.flips.value += learned.level_flipped
