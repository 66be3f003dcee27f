"""SPEC 5 under the `adaptive` rule set: the published trie and default hints, with back-off
percentiles, hysteresis levels and each node's model.

The same shapes as `worker.learner.trie` builds, with three differences, each present only
while its piece is on: every prediction's p90 and p95 are the back-off ones
(`worker.learner.backoff`); its `latency_sensitivity` is the level hysteresis left
(`worker.learner.hysteresis`); and every node but the root has a `model` (priors), the model
most of its calls named, or null.
"""

from __future__ import annotations

from typing import Any

from worker.learner.backoff import RankTable, Uppers, rank_table, uppers
from worker.learner.config import LearnerConfig
from worker.learner.hints import default_hint_values, sensitivity_level
from worker.learner.hysteresis import GroupKey, Levels
from worker.learner.nodes import NodeStats, StatGroup
from worker.learner.priors import Component, component
from worker.learner.state import AgentState
from worker.models.timestamps import now_rfc3339

#: a group's back-off uppers for its three statistics (remaining, interarrival, output tokens)
Parent = tuple[Uppers | None, Uppers | None, Uppers | None]
_NO_PARENT: Parent = (None, None, None)
_STATISTICS = ("remaining_calls", "interarrival_ms", "output_tokens")


class AdaptiveTrie:
    """Builds one agent's predictions as the adaptive rule set publishes them."""

    def __init__(self, state: AgentState, config: LearnerConfig) -> None:
        settings = config.adaptive
        extras = state.adaptive
        self.state = state
        self.config = config
        self.scale = config.scale
        self.ranks: RankTable | None = (
            rank_table(settings.backoff_samples) if settings.backoff_samples else None
        )
        self.levels: Levels | None = (
            extras.levels if settings.hysteresis and extras is not None else None
        )
        self.models = settings.priors

    def uppers(self, group: StatGroup, parent: Parent) -> Parent:
        """The group's back-off (p90, p95) per statistic (None: no samples, or no back-off)."""
        ranks = self.ranks
        if ranks is None:
            return _NO_PARENT
        return (
            uppers(group.remaining_calls, parent[0], ranks),
            uppers(group.interarrival_ms, parent[1], ranks),
            uppers(group.output_tokens, parent[2], ranks),
        )

    def level(self, group: StatGroup, key: GroupKey) -> int | None:
        levels = self.levels
        level = None if levels is None else levels.get(key)
        return sensitivity_level(group.score, self.scale) if level is None else level

    def prediction(self, group: StatGroup, key: GroupKey, own: Parent) -> dict[str, Any]:
        prediction: dict[str, Any] = {}
        for name, upper in zip(_STATISTICS, own, strict=True):
            metrics = getattr(group, name).metrics()
            if upper is not None and (upper[0] != metrics["p90"] or upper[1] != metrics["p95"]):
                metrics = {**metrics, "p90": upper[0], "p95": upper[1]}
            prediction[name] = metrics
        prediction["latency_sensitivity"] = self.level(group, key)
        return prediction

    def root_uppers(self) -> Parent:
        """The root's any-index uppers: the parent of every node's any-index prediction."""
        group = self.state.root.any_index
        return self.uppers(group, _NO_PARENT) if group.remaining_calls.count else _NO_PARENT

    def components(self) -> dict[str, Component]:
        """Each node's prior component: its model and any-index prediction (priors)."""
        extras = self.state.adaptive
        root = self.root_uppers()
        found: dict[str, Component] = {}
        for name, node in self.state.children.items():
            group = node.any_index
            if group.remaining_calls.count:
                model = None if extras is None else extras.model_of(name)
                own = self.prediction(group, (name, 0), self.uppers(group, root))
                known = component(model, own)
                if known is not None:
                    found[name] = known
        return found

    def node(self, name: str | None, node: NodeStats, root: Parent) -> dict[str, Any]:
        """A node's dict (no children); `root`: the root's any-index uppers (None: the root)."""
        any_index = node.any_index
        has_samples = any_index.remaining_calls.count > 0
        own = self.uppers(any_index, root) if has_samples else _NO_PARENT
        result: dict[str, Any] = {
            "name": "root" if name is None else name,
            "children": {},
            "predictions_by_call_index": {
                str(index): self.prediction(group, (name, index), self.uppers(group, own))
                for index, group in sorted(node.by_index.items())
            },
            "predictions_any_index": (
                self.prediction(any_index, (name, 0), own) if has_samples else None
            ),
        }
        if self.models and name is not None:
            extras = self.state.adaptive
            result["model"] = None if extras is None else extras.model_of(name)
        return result

    def trie(self, agent_id: str) -> dict[str, Any]:
        state = self.state
        root = self.root_uppers()
        tree = self.node(None, state.root, _NO_PARENT)
        tree["children"] = {
            name: self.node(name, node, root) for name, node in sorted(state.children.items())
        }
        return {
            "version": "1.0",
            "generated_at": now_rfc3339(),
            "workflow_name": agent_id,
            "root": tree,
        }

    def hints(self) -> dict[str, Any] | None:
        """The default hints (AgentHints fields), as `trie.state_hints` reads them."""
        group = self.state.root.any_index
        if not group.remaining_calls.count:
            return None
        ranks = self.ranks
        found = None if ranks is None else uppers(group.output_tokens, None, ranks)
        osl = group.output_tokens.metrics()["p90"] if found is None else found[0]
        return default_hint_values(
            osl,
            group.interarrival_ms.mean,
            group.remaining_calls.mean,
            self.level(group, (None, 0)),
            self.config,
        )
