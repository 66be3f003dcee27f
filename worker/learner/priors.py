"""Priors (the `adaptive` rule set): hints for an agent with no history, pooled from the
fleet's agents that make calls of the same name with the same model.

Under the adaptive rule set every node of a published trie carries `model`, the model most of
its calls named (SPEC 6). A *component* is one agent's node of a given name: its any-index
prediction and its model. The prior of (name, model) pools the components of that name with
that model (all of the name's components when none has it, or no model is asked for), each
of its three Metrics as a mixture weighted by `sample_count`:

- each component's distribution is taken as the piecewise-linear CDF through
  (lo, 0), (p50, 0.5), (p90, 0.9), (p95, 0.95), (hi, 1), with lo = max(2 p50 - p90, 0) and
  hi = p95 + 2 (p95 - p90) (knots made non-decreasing);
- the prior's p50, p90 and p95 are the mixture's quantiles (the least x whose mixture CDF
  reaches q), its mean the weighted mean of the means, its `sample_count` the total;
- its `latency_sensitivity` the weighted mean level (weights: output-token samples), rounded
  half away from zero; null when no component has one.

Components are taken in order of agent id, so the same tries give the same prior to the bit:
the worker publishes the tries `replay` prints (hence the same priors), a router pools them
from what it read (`PriorIndex`), and `replay --evaluate` from the fleet as it learns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

from worker.learner.rounding import round_half_away

_STATISTICS = ("remaining_calls", "interarrival_ms", "output_tokens")
_QUANTILES = (0.5, 0.9, 0.95)
#: one Metrics as pooled: (sample_count, mean, p50, p90, p95)
Summary = tuple[int, float, float, float, float]
#: a component: its model, a Summary per statistic, and its level
Component = tuple[str | None, tuple[Summary, Summary, Summary], int | None]


def component(model: Any, prediction: Any) -> Component | None:
    """A node's (model, any-index prediction) as a component; None when it is not one (no
    prediction, or not the published shape: a router skips what it cannot read)."""
    if not isinstance(prediction, Mapping) or not (model is None or isinstance(model, str)):
        return None
    summaries = []
    for name in _STATISTICS:
        metrics = prediction.get(name)
        if not isinstance(metrics, Mapping):
            return None
        count = metrics.get("sample_count")
        values: list[Any] = [metrics.get(key) for key in ("mean", "p50", "p90", "p95")]
        if type(count) is not int or count < 0 or not all(map(_is_number, values)):
            return None
        summaries.append((count, *(float(v) for v in values)))
    level = prediction.get("latency_sensitivity")
    if level is not None and type(level) is not int:
        return None
    return model, (summaries[0], summaries[1], summaries[2]), level  # type: ignore[return-value]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def pool(components: list[Component]) -> dict[str, Any] | None:
    """The prior Prediction of components (None without any output-token sample)."""
    tokens = [c[1][2] for c in components]
    weight = sum(s[0] for s in tokens)
    if not weight:
        return None
    prediction: dict[str, Any] = {
        name: mixture([c[1][i] for c in components]) for i, name in enumerate(_STATISTICS)
    }
    levelled = [(s[0], c[2]) for c, s in zip(components, tokens, strict=True) if c[2] is not None]
    total = sum(w for w, _ in levelled)
    prediction["latency_sensitivity"] = (
        round_half_away(sum(w * level for w, level in levelled) / total) if total else None
    )
    return prediction


def mixture(summaries: list[Summary]) -> dict[str, Any]:
    """Metrics of the sample-count-weighted mixture of the summaries' CDFs."""
    summaries = [s for s in summaries if s[0] > 0]
    weight = sum(s[0] for s in summaries)
    if not weight:
        return {"sample_count": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0}
    # the mixture CDF (times `weight`): rises at x by `jumps`, its slope changes by `slopes`
    jumps: dict[float, float] = {}
    slopes: dict[float, float] = {}
    for count, _, p50, p90, p95 in summaries:
        knots = _knots(p50, p90, p95)
        for (xa, ya), (xb, yb) in pairwise(knots):
            rise = count * (yb - ya)
            if xb == xa:
                jumps[xa] = jumps.get(xa, 0.0) + rise
            else:
                slope = rise / (xb - xa)
                slopes[xa] = slopes.get(xa, 0.0) + slope
                slopes[xb] = slopes.get(xb, 0.0) - slope
    quantiles = _quantiles(sorted(jumps.keys() | slopes.keys()), jumps, slopes, weight)
    return {
        "sample_count": weight,
        "mean": sum(s[0] * s[1] for s in summaries) / weight,
        "p50": quantiles[0],
        "p90": quantiles[1],
        "p95": quantiles[2],
    }


def _knots(p50: float, p90: float, p95: float) -> list[tuple[float, float]]:
    p90 = max(p90, p50)
    p95 = max(p95, p90)
    return [
        (max(2 * p50 - p90, min(p50, 0.0)), 0.0),
        (p50, 0.5),
        (p90, 0.9),
        (p95, 0.95),
        (p95 + 2 * (p95 - p90), 1.0),
    ]


def _quantiles(
    xs: list[float], jumps: dict[float, float], slopes: dict[float, float], weight: int
) -> list[float]:
    """The least x where the mixture CDF reaches each of `_QUANTILES`, by one sweep."""
    found: list[float] = []
    targets = [q * weight for q in _QUANTILES]
    level = slope = 0.0
    previous = xs[0]
    for x in xs:
        reached = level + slope * (x - previous)
        while len(found) < len(targets) and reached >= targets[len(found)]:
            found.append(x if slope <= 0 else x - (reached - targets[len(found)]) / slope)
        level = reached + jumps.get(x, 0.0)
        while len(found) < len(targets) and level >= targets[len(found)]:
            found.append(x)
        slope += slopes.get(x, 0.0)
        previous = x
    while len(found) < len(targets):  # rounding left the last target a hair short
        found.append(xs[-1])
    return found


class PriorIndex:
    """Components by call name, from every agent's latest trie, and the priors pooled from
    them; a prior is pooled again when asked for after its components changed, at most once
    per `max_stale_s` (0: always current)."""

    def __init__(
        self, max_stale_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_stale_s = max_stale_s
        self.clock = clock
        self._by_name: dict[str, dict[str, Component]] = {}  # name -> agent id -> component
        self._names_of: dict[str, list[str]] = {}  # agent id -> its components' names
        self._changed: dict[str, int] = {}  # name -> changes so far
        #: (name, model) -> (changes pooled, when, prior)
        self._pooled: dict[tuple[str, str | None], tuple[int, float, dict[str, Any] | None]] = {}

    def __len__(self) -> int:
        return len(self._by_name)

    def set_trie(self, agent_id: str, trie: Mapping[str, Any] | None) -> None:
        """The agent's latest trie (None: gone); only nodes with a `model` contribute."""
        nodes: dict[str, Component] = {}
        if trie is not None:
            children = trie.get("root", {}).get("children") if isinstance(trie, Mapping) else None
            for name, node in (children or {}).items() if isinstance(children, Mapping) else ():
                if isinstance(node, Mapping) and "model" in node:
                    found = component(node["model"], node.get("predictions_any_index"))
                    if found is not None:
                        nodes[name] = found
        self.set_components(agent_id, nodes)

    def set_components(self, agent_id: str, nodes: Mapping[str, Component]) -> None:
        """Replace the agent's components (by node name)."""
        changed = self._changed
        for name in self._names_of.pop(agent_id, ()):
            by_agent = self._by_name[name]
            del by_agent[agent_id]
            if not by_agent:
                del self._by_name[name]
            changed[name] = changed.get(name, 0) + 1
        for name, found in nodes.items():
            self._by_name.setdefault(name, {})[agent_id] = found
            changed[name] = changed.get(name, 0) + 1
        if nodes:
            self._names_of[agent_id] = list(nodes)

    def prediction(self, name: str, model: str | None = None) -> dict[str, Any] | None:
        """The prior of (name, model): a Prediction, or None when no agent makes such calls."""
        by_agent = self._by_name.get(name)
        if not by_agent:
            return None
        if model is not None and not any(c[0] == model for c in by_agent.values()):
            model = None
        key = (name, model)
        changes = self._changed.get(name, 0)
        cached = self._pooled.get(key)
        now = self.clock()
        if cached is not None and (cached[0] == changes or now - cached[1] < self.max_stale_s):
            return cached[2]
        chosen = [
            by_agent[agent]
            for agent in sorted(by_agent)
            if model is None or by_agent[agent][0] == model
        ]
        prior = pool(chosen)
        self._pooled[key] = (changes, now, prior)
        return prior
