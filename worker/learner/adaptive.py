"""Learning one run under the `adaptive` rule set (SPEC 6): the corrected rules, scored with
back-off, then decay, priors' models and hysteresis.

Per run, in order: score its calls against the state (`AdaptiveScorer`: the back-off `osl`,
and the shift evidence); let the streak judge the run (`shift`: it may hold the run for a
while, and on a shift the agent forgets everything before the streak); fold the runs to
learn in (statistics, and the models of their calls); move the levels of the groups they
touched (`hysteresis`). Folding
stored observations (`fold`) goes through the same steps run by run, so a state rebuilt from
a snapshot and deltas equals the state that learned the runs, bit for bit.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

from worker.learner.accuracy import Pair
from worker.learner.adaptive_scoring import AdaptiveScorer
from worker.learner.analysis import CallObservation, observe_run, scores_of
from worker.learner.config import LearnerConfig
from worker.learner.evaluation import Learned, recent_pair
from worker.learner.hysteresis import Levels
from worker.learner.nodes import units_of
from worker.learner.shift import KeptRun, Streak
from worker.models import Run

if TYPE_CHECKING:
    from worker.learner.state import AgentState

#: a call's model counts for priors only when its name is at most this long, without control
#: characters, and a node counts at most this many models (bounds the published trie:
#: `limits.trie_bytes_bound`)
MODEL_CHARS = 64
MODELS_PER_NODE = 8
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AdaptiveExtras:
    """What an agent keeps under the adaptive rule set besides its statistics: each node's
    call models (priors), the streak (decay) and each group's published level (hysteresis)."""

    __slots__ = ("levels", "models", "streak")

    def __init__(self) -> None:
        #: per node name: model -> calls of it learned since the last shift
        self.models: dict[str, dict[str, int]] = {}
        self.streak = Streak()
        self.levels = Levels()

    def count_models(
        self, observations: list[CallObservation], models: list[str | None] | None
    ) -> None:
        if models is None:
            return
        if len(models) != len(observations):
            raise ValueError("a model per observation")
        known = self.models
        rows = cast(list[tuple[Any, ...]], observations)  # as they are: not rebuilt
        for i in range(len(models)):
            model = models[i]
            if model is None:
                continue
            name: str = rows[i][0]
            counts = known.get(name)
            if counts is not None and model in counts:  # counted before: a valid name
                counts[model] += 1
                continue
            if len(model) > MODEL_CHARS or _CONTROL.search(model):
                continue
            if counts is None:
                counts = known[name] = {}
            if len(counts) < MODELS_PER_NODE:
                counts[model] = 1

    def model_of(self, name: str) -> str | None:
        """The model most of the node's calls named (the first in order on a tie)."""
        counts = self.models.get(name)
        if not counts:
            return None
        return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]

    def dump(self) -> list[Any]:
        models = [[name, sorted(counts.items())] for name, counts in sorted(self.models.items())]
        return [models, self.streak.dump(), self.levels.dump()]

    @classmethod
    def load(cls, data: Any) -> AdaptiveExtras:
        models, streak, levels = data
        extras = cls()
        for name, counts in models:
            if not isinstance(name, str) or not all(
                isinstance(m, str) and type(c) is int and c > 0 for m, c in counts
            ):
                raise ValueError("models: a node name and [model, count] pairs")
            extras.models[name] = dict(counts)
        extras.streak = Streak.load(streak)
        extras.levels = Levels.load(levels)
        return extras

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AdaptiveExtras)
            and self.models == other.models
            and self.streak == other.streak
            and self.levels == other.levels
        )


def learn(state: AgentState, run: Run, config: LearnerConfig) -> Learned:
    """`AgentState.learn` under the adaptive rule set."""
    # (the scorer holds the settings; building it before the run reads only the state)
    models: list[str | None] | None = [] if _scorer(state, config).priors else None
    observations = observe_run(run, config, models)
    state.runs += 1
    return _fold_run(state, observations, models, config)


def fold(
    state: AgentState,
    observations: list[CallObservation],
    models: list[str | None] | None,
    runs: int,
    config: LearnerConfig,
) -> None:
    """`AgentState.fold` under the adaptive rule set: the stored observations of `runs` runs
    (and their models), learned again run by run; a run's last LLM call has no calls
    remaining. (What the runs added to the recent accuracy comes out the same.)"""
    start = 0
    for end, observation in enumerate(observations, start=1):
        if observation[2] == 0:
            kept = None if models is None else models[start:end]
            _fold_run(state, observations[start:end], kept, config)
            start = end
    if start != len(observations):
        raise ValueError("observations end inside a run (remaining_calls never 0)")
    state.runs += runs


def _fold_run(
    state: AgentState,
    observations: list[CallObservation],
    models: list[str | None] | None,
    config: LearnerConfig,
) -> Learned:
    if not observations:  # nothing to score, fold or judge: the streak is left as it is
        return Learned([], [], False, models)
    extras = state.extras()
    scorer = _scorer(state, config)
    if not scorer.priors:
        models = None
    elif models is None:  # stored before the models were: none known
        models = [None] * len(observations)
    scale = scorer.scale
    before = scorer.default_level(extras.levels, scale)
    scores = scorer.score(state, observations)
    run: KeptRun = (observations, models)
    now, shift = [run], False
    if scorer.shift_calls:
        now, shift = extras.streak.observe(
            scorer.tally, run, scorer.shift_share, scorer.shift_calls
        )
    if shift:
        scorer = _shift(state, extras, now, config)
    else:  # this run, or the runs a streak held and this one, or none while it is held
        for kept, kept_models in now:
            units = units_of(scores_of(kept))
            state.queue(kept, units)
            extras.count_models(kept, kept_models)
            scorer.learn(kept, units, extras.levels, scale)
    after = scorer.default_level(extras.levels, scale)
    flipped = before is not None and after != before
    if not scorer.evaluate:
        return Learned(observations, [], flipped, models)
    pairs: list[Pair] = []
    if scores[0].source != "none":  # a run's calls are all served, or none
        pairs = [recent_pair(score) for score in scores]
        state.recent.extend(pairs)
    return Learned(observations, scores, flipped, models, pairs)


def _shift(
    state: AgentState, extras: AdaptiveExtras, runs: list[KeptRun], config: LearnerConfig
) -> AdaptiveScorer:
    """A shift: the agent forgets everything and learns the streak's `runs` alone; the
    levels of the groups that remain move from where they were. Returns the new scorer."""
    state.forget()
    extras.models = {}
    for observations, models in runs:
        state.queue(observations, units_of(scores_of(observations)))
        extras.count_models(observations, models)
    scorer = _scorer(state, config)  # for the statistics as they now are
    margin = scorer.margin
    if margin:
        means = scorer.means()
        extras.levels.keep_only(set(means))
        for key, mean in means.items():
            extras.levels.update(key, mean, config.scale, margin)
    return scorer


def _scorer(state: AgentState, config: LearnerConfig) -> AdaptiveScorer:
    """The agent's scorer (built when missing), which also holds the settings a run reads
    (native: a settings field read costs a Python attribute lookup)."""
    scorer = state.scorer(config)
    assert isinstance(scorer, AdaptiveScorer)
    return scorer
