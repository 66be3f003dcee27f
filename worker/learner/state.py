"""One agent's learning state: per-node statistics (SPEC 4.6) and the recent accuracy of
its hints (SPEC 10, `worker.learner.accuracy`).

Learning returns the run's observations, so that the worker can store what changed (a
delta) instead of the whole state; `fold` applies observations, `merge` adds a state learned
from other runs. Sums are exact and the serialized form is canonical, so a state gives the
same bytes however its runs were batched or split into deltas. Which run ids were learned is
kept apart (`worker.learner.run_ids`), per partition in the worker.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import cast

import orjson

from worker.learner import adaptive
from worker.learner.accuracy import Pair, RecentAccuracy
from worker.learner.adaptive import AdaptiveExtras
from worker.learner.adaptive_scoring import AdaptiveScorer
from worker.learner.analysis import CallObservation, observe_run, scores_of
from worker.learner.config import LearnerConfig
from worker.learner.evaluation import Learned, Scorer, recent_pair
from worker.learner.nodes import FOLD_OBSERVATIONS, NodeStats, Queued, units_of
from worker.models import Run

#: 1: statistics and the agent's run ids in one value; 2: statistics only (exact sums);
#: 3: statistics and the recent accuracy; 4: and what the adaptive rule set keeps (written
#: only by states learned under it)
_FORMAT_VERSION = 3
_ADAPTIVE_FORMAT = 4
_HEADER = struct.Struct("<BI")  # format version, length of the JSON part (v1: run ids follow)


class StateFormatError(ValueError):
    """Bytes that are not an agent state this version can read."""


class AgentState:
    """Everything learned for one agent; `learn` folds in one run (SPEC section 4) after
    scoring it (SPEC 10): the statistics, the recent accuracy of its hints, and under the
    adaptive rule set what it keeps besides (`adaptive`)."""

    __slots__ = ("_scorer", "adaptive", "children", "recent", "root", "runs")

    def __init__(self) -> None:
        self.runs = 0
        self.root = NodeStats()
        #: the root's children by call name (a name with "/" is still one node)
        self.children: dict[str, NodeStats] = {}
        self.recent = RecentAccuracy()
        self._scorer: Scorer | None = None  # built on the first run scored
        self.adaptive: AdaptiveExtras | None = None  # learned under the adaptive rule set

    @property
    def node_count(self) -> int:
        """Distinct trie nodes, the root included."""
        return 1 + len(self.children)

    @property
    def prediction_count(self) -> int:
        """Per-call-index predictions of the whole trie (every node's indices 1..high)."""
        return self.root.high + sum(node.high for node in self.children.values())

    def size_after(self, run: Run) -> tuple[int, int]:
        """The trie's (nodes, per-call-index predictions) once `run` is learned."""
        per_name: dict[str, int] = {}
        for call in run.calls:
            if call.kind == "llm" and call.ended_at is not None:
                per_name[call.name] = per_name.get(call.name, 0) + 1
        if not per_name:
            return self.node_count, self.prediction_count
        children = self.children
        nodes = self.node_count + sum(name not in children for name in per_name)
        added = max(0, max(per_name.values()) - self.root.high)
        for name, count in per_name.items():
            node = children.get(name)
            have = 0 if node is None else node.high
            if count > have:
                added += count - have
        return nodes, self.prediction_count + added

    def learn(self, run: Run, config: LearnerConfig) -> Learned:
        """Score the run's LLM calls against this state (unless `config.evaluate` is off),
        then fold the run in (unconditionally: duplicates are the caller's to skip). The
        observations returned, folded into another state, have the same effect (`fold`)."""
        if config.semantics == "adaptive":
            return adaptive.learn(self, run, config)
        observations = observe_run(run, config)
        self.runs += 1
        if not config.evaluate:
            self._scorer = None  # its predictors would miss this run
            self.queue(observations, units_of(scores_of(observations)))
            return Learned(observations, [], False)
        return self._score_and_fold(observations, config.scale)

    def _score_and_fold(self, observations: list[CallObservation], scale: int | None) -> Learned:
        scorer = self._scorer
        if scorer is None:
            scorer = self._scorer = Scorer(self)
        scores = scorer.score(self, observations)
        sensitivity = scores_of(observations)
        units = units_of(sensitivity)
        self.queue(observations, units)
        flipped = scorer.learn_scores(units, sensitivity, scale)
        pairs: list[Pair] = []
        if scores and scores[0].source != "none":  # a run's calls are all served, or none
            pairs = [recent_pair(score) for score in scores]
            self.recent.extend(pairs)
        return Learned(observations, scores, flipped, None, pairs)

    def fold(
        self,
        observations: Iterable[CallObservation],
        runs: int,
        recent: Iterable[Pair] | None = None,
        config: LearnerConfig | None = None,
        models: list[str | None] | None = None,
    ) -> None:
        """Apply the observations of `runs` runs (as `learn` returned them, in order) and
        what those runs added to the recent accuracy: `recent`, the (covered, osl error)
        pairs of their scored calls, or else scored again here against this state (the same
        pairs when this state is the one they were learned on: a snapshot and the deltas
        before them). Under the adaptive rule set (`config`) the runs are learned again one
        by one from their observations and `models` (`adaptive.fold`), `recent` unread."""
        if config is not None and config.semantics == "adaptive":
            adaptive.fold(self, list(observations), models, runs, config)
            return
        if recent is None:
            run: list[CallObservation] = []
            for observation in observations:
                run.append(observation)
                if observation[2] == 0:  # no remaining calls: a run's last LLM call
                    self._score_and_fold(run, None)
                    run = []
            if run:
                raise ValueError("observations end inside a run (remaining_calls never 0)")
        else:
            self._scorer = None  # its predictors would miss these observations
            observations = list(observations)
            self.queue(observations, units_of(scores_of(observations)))
            self.recent.extend(recent)
        self.runs += runs

    def scorer(self, config: LearnerConfig) -> Scorer:
        """The scorer of an agent learned under the adaptive rule set (built when missing)."""
        scorer = self._scorer
        if scorer is None:
            scorer = self._scorer = AdaptiveScorer(self, config)
        return scorer

    def extras(self) -> AdaptiveExtras:
        """What the adaptive rule set keeps for the agent (empty at first)."""
        if self.adaptive is None:
            self.adaptive = AdaptiveExtras()
        return self.adaptive

    def forget(self) -> None:
        """Drop the statistics (a shift, `worker.learner.shift`); runs and accuracy stay."""
        self.root = NodeStats()
        self.children = {}
        self._scorer = None

    def queue(self, observations: list[CallObservation], units: list[int | None]) -> None:
        """Queue observations at the root and their nodes, with their scores in units."""
        root = self.root
        high = root.high
        children = self.children
        # NodeStats.add inlined (two calls per observation): queue, fold once long enough.
        # Read as variable-length tuples: the compiled code keeps a fixed-length tuple's
        # fields apart and would build each observation anew before extending it.
        rows = cast(list[Queued], observations)
        if len(units) != len(rows):
            raise ValueError("a unit per observation")
        for i in range(len(rows)):
            obs = rows[i] + (units[i],)
            queued = root._queued
            queued.append(obs)
            if len(queued) >= FOLD_OBSERVATIONS:
                root._fold()
            node = children.get(obs[0])
            if node is None:
                node = children[obs[0]] = NodeStats()
            queued = node._queued
            queued.append(obs)
            if len(queued) >= FOLD_OBSERVATIONS:
                node._fold()
            index = obs[1]
            if index > node.high:
                node.high = index
                if index > high:
                    high = index
        root.high = high

    def merge(self, other: AgentState) -> AgentState:
        """Fold a state learned from other runs into this one, and return this one. Scores
        depend on the order runs were learned in, so the recent accuracy is only this
        state's followed by the other's (the statistics are exactly those of all runs)."""
        self.runs += other.runs
        self.root.merge(other.root)
        for name, node in other.children.items():
            self.children.setdefault(name, NodeStats()).merge(node)
        self.recent.extend(other.recent.pairs)
        if other.adaptive is not None:  # models add up; the streak and levels stay this one's
            extras = self.extras()
            for name, counts in other.adaptive.models.items():
                mine = extras.models.setdefault(name, {})
                for model, count in counts.items():
                    mine[model] = mine.get(model, 0) + count
        self._scorer = None
        return self

    def to_bytes(self) -> bytes:
        """Compact canonical form: a small header, then the statistics and the recent
        accuracy as JSON."""
        children = {n: s.dump() for n, s in sorted(self.children.items())}
        parts = [self.runs, self.root.dump(), children, self.recent.dump()]
        version = _FORMAT_VERSION
        if self.adaptive is not None:
            parts.append(self.adaptive.dump())
            version = _ADAPTIVE_FORMAT
        body = orjson.dumps(parts)
        return _HEADER.pack(version, len(body)) + body

    @classmethod
    def from_bytes(cls, blob: bytes) -> AgentState:
        """Read `to_bytes` output, also formats 2 (no recent accuracy: an empty one) and 1
        (whose run ids are ignored: `legacy_run_ids`)."""
        try:
            version, length = _HEADER.unpack_from(blob)
            if version not in (1, 2, _FORMAT_VERSION, _ADAPTIVE_FORMAT):
                raise StateFormatError(f"unknown agent state format version {version}")
            start = _HEADER.size
            runs, root, children, *recent = orjson.loads(blob[start : start + length])
            extras = recent.pop() if version == _ADAPTIVE_FORMAT else None
            if len(recent) > 1:
                raise ValueError("more parts than a state has")
            state = cls()
            state.runs = runs
            state.root = NodeStats.load(root)
            state.children = {name: NodeStats.load(data) for name, data in children.items()}
            if recent:  # formats 1 and 2 have none
                state.recent = RecentAccuracy.load(recent[0])
            if extras is not None:
                state.adaptive = AdaptiveExtras.load(extras)
        except StateFormatError:
            raise
        except (ValueError, TypeError, KeyError, struct.error) as exc:
            raise StateFormatError(f"unreadable agent state: {exc}") from None
        return state

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AgentState)
            and self.runs == other.runs
            and self.root == other.root
            and self.children == other.children
            and self.recent == other.recent
            and self.adaptive == other.adaptive
        )

    def __repr__(self) -> str:
        return f"AgentState(runs={self.runs}, nodes={self.node_count})"


def legacy_run_ids(blob: bytes) -> bytes:
    """The run ids a format-1 state value carried after its statistics (b"" for format 2)."""
    version, length = _HEADER.unpack_from(blob)
    return blob[_HEADER.size + length :] if version == 1 else b""
