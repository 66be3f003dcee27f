"""SPEC 10: each LLM call scored against the prediction a router had for it, before its run
is learned.

`Scorer` resolves every call of a run as SPEC 8 would against the agent's state at that
moment (no min_runs / max_age filter): the SPEC 5 lookup at path [name] and the call's index
(source `trie`), else the root's any-index prediction when the agent has default hints
(`agent_default`), else nothing (`none`). With the agent's own trie the lookup always reaches
the root, so a call gets `trie` whenever the agent has default hints at all: `agent_default`
is never the source here (a router gets it only when it has no trie for the agent).

Learning a run goes through here (`AgentState.learn`): the scorer keeps a `Predictor` per
(name, call index) group, which each call's own sample then updates, so a call costs a
lookup and an O(1) update rather than percentiles recomputed from the statistics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from worker.learner.accuracy import Pair
from worker.learner.analysis import CallObservation
from worker.learner.exact_sums import Mean
from worker.learner.hints import sensitivity_level
from worker.learner.predictor import Predictor, Values

if TYPE_CHECKING:
    from worker.learner.state import AgentState

Source = Literal["trie", "agent_default", "prior", "none"]
#: the sources an agent's own state gives; `prior` (the fleet's, adaptive rule set) only
#: `replay --evaluate` scores (`fleet_evaluation`)
SOURCES: tuple[Source, ...] = ("trie", "agent_default", "none")


class CallScore:
    """How one LLM call compared with its prediction (SPEC 10); zeros when not served.

    A plain class rather than a NamedTuple: compiled, it is built and read natively (one
    per LLM call learned)."""

    __slots__ = (
        "covered",
        "iat_error_ms",
        "osl_error",
        "output_tokens",
        "p50",
        "remaining_error",
        "source",
    )

    def __init__(
        self,
        source: Source,
        output_tokens: int,
        p50: float,
        covered: bool,
        osl_error: float,
        iat_error_ms: float | None,
        remaining_error: float,
    ) -> None:
        self.source: Source = source
        self.output_tokens = output_tokens  # y
        self.p50 = p50  # the prediction's output_tokens p50
        self.covered = covered  # y <= round(p90): the osl a hint carries
        self.osl_error = osl_error  # |p50 - y|
        #: |interarrival mean - gap|; None without a gap or without interarrival samples
        self.iat_error_ms = iat_error_ms
        self.remaining_error = remaining_error  # |remaining_calls mean - remaining calls|

    def fields(self) -> tuple[Source, int, float, bool, float, float | None, float]:
        return (
            self.source,
            self.output_tokens,
            self.p50,
            self.covered,
            self.osl_error,
            self.iat_error_ms,
            self.remaining_error,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CallScore) and self.fields() == other.fields()

    def __repr__(self) -> str:
        return f"CallScore{self.fields()!r}"


def recent_pair(score: CallScore) -> Pair:
    """A scored call's entry in the agent's recent accuracy: (covered, osl_error)."""
    return score.covered, score.osl_error


class Learned:
    """What learning one run did: its observations (what a delta stores), each LLM call's
    score in the same order, whether the agent's default latency sensitivity changed, and
    (adaptive rule set, priors on) each call's model, which a delta stores too."""

    __slots__ = ("level_flipped", "models", "observations", "pairs", "scores")

    def __init__(
        self,
        observations: list[CallObservation],
        scores: list[CallScore],
        level_flipped: bool,
        models: list[str | None] | None = None,
        pairs: list[Pair] | None = None,
    ) -> None:
        self.observations = observations
        self.scores = scores
        self.level_flipped = level_flipped
        self.models = models
        #: the pairs the run added to the recent accuracy, when learning kept them
        self.pairs = pairs

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Learned)
            and self.observations == other.observations
            and self.scores == other.scores
            and self.level_flipped == other.level_flipped
            and self.models == other.models
            and self.recent_pairs() == other.recent_pairs()
        )

    def recent_pairs(self) -> list[Pair]:
        """What the run added to the agent's recent accuracy (a delta carries it)."""
        if self.pairs is not None:
            return self.pairs
        return [recent_pair(s) for s in self.scores if s.source != "none"]


def unserved(obs: CallObservation) -> CallScore:
    return CallScore("none", obs[4], 0.0, False, 0.0, None, 0.0)


def score_against(source: Source, values: Values, obs: CallObservation) -> CallScore:
    """One call against a prediction's (osl, p50, remaining mean, gap mean): the score of
    every scorer, ours (`Scorer.score`, the adaptive one) and the baselines."""
    osl, p50, remaining_mean, gap_mean = values
    y, gap = obs[4], obs[3]
    return CallScore(
        source,
        y,
        p50,
        y <= osl,
        abs(p50 - y),
        None if gap is None or gap_mean is None else abs(gap_mean - gap),
        abs(remaining_mean - obs[2]),
    )


class Scorer:
    """What scoring keeps between an agent's runs: a Predictor per (name, call index) group
    of the trie (every one: a group has one from its first sample), and the root's score
    mean (its default latency sensitivity).

    Valid only while every change to the state goes through `score` then a fold of the same
    observations; the state drops it on any other change (merge, fold of stored deltas).
    """

    __slots__ = ("level", "predictors", "root_score")

    def __init__(self, state: AgentState) -> None:
        """For a state as it stands (each node's queue is folded, once)."""
        self.predictors: dict[tuple[str, int], Predictor] = {
            (name, index): Predictor.of(group)
            for name, node in state.children.items()
            for index, group in node.by_index.items()
        }
        score = state.root.any_index.score
        self.root_score = Mean(score.count, score.units, score.shift)
        self.level: tuple[int, int | None] | None = None  # (scale, level) last computed

    def score(self, state: AgentState, observations: list[CallObservation]) -> list[CallScore]:
        """Each call of one run against the state before the run; updates the predictors
        with the run (so the state must then fold these observations). Every call of a
        run is served, or (before the agent's first LLM call) none is."""
        predictors = self.predictors
        scores: list[CallScore] = []
        append = scores.append
        for obs in observations:
            name, index, remaining, gap, y, _ = obs
            predictor = predictors.get((name, index))
            if predictor is not None:  # the usual case: a group the agent has
                values = predictor.values
                # no other call of this run reads this group: it may learn the call now
                predictor.add(y, remaining, gap)
            else:
                found = self._new_group(state, obs)
                if found is None:
                    append(unserved(obs))
                    continue
                values = found
            append(score_against("trie", values, obs))
        return scores

    def _new_group(self, state: AgentState, obs: CallObservation) -> Values | None:
        """For a call whose name or index is new to the agent, the prediction the lookup
        falls back to: the node's any-index one, else the root's for the index, else the
        root's any-index one; None before the agent's first LLM call. Read from the
        statistics (this run is not folded yet). The new group's predictor starts here."""
        name, index, remaining, gap, y, _ = obs
        predictor = self.predictors[name, index] = Predictor()
        predictor.add(y, remaining, gap)
        node = state.children.get(name)
        root = state.root
        if node is not None:
            group = node.any_index
        elif index <= root.high:
            group = root.by_index[index]
        elif root.high:
            group = root.any_index
        else:
            return None
        return Predictor.of(group).values

    def learn_scores(self, units: list[int | None], scores: list[float], scale: int | None) -> bool:
        """Fold a run's sensitivity scores into the root's mean (as the root's any-index
        group folds them); True when that changed the default latency sensitivity at
        `scale` (a flip; never from none, before the agent's first LLM call). Without a
        scale nothing is compared."""
        before = None if scale is None else self._level(scale)
        self.root_score.add_fast(units, scores)
        self.level = None
        return scale is not None and before is not None and self._level(scale) != before

    def root_level(self, scale: int) -> int | None:
        """The default latency sensitivity at `scale`, kept until the next run."""
        return self._level(scale)

    def _level(self, scale: int) -> int | None:
        """The default latency sensitivity at `scale`, kept until the next run."""
        if self.level is None or self.level[0] != scale:
            self.level = (scale, sensitivity_level(self.root_score, scale))
        return self.level[1]
