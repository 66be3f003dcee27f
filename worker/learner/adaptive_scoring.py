"""SPEC 10 scoring under the `adaptive` rule set: what `Scorer` does, with the back-off `osl`
the trie publishes, the tally the shift detector reads, and the score means hysteresis needs.

- `osl` with back-off (`worker.learner.backoff`): the own group's order statistic of rank
  ceil(0.9 (n + k)) while its samples are exact, else, beyond them, the larger of its largest
  sample and its parent's back-off p90 (the node's any-index group, as the scorer keeps it:
  `backoff.Parent`, learned run by run, so that reading it folds no node queue).
- the tally of a run: its calls whose own (name, call index) group had at least
  `shift_min_samples` samples, and how many of them were above their `osl` or below
  `2 p50 - osl` (`worker.learner.shift`).
- with hysteresis, the exact mean score of each group hysteresis keeps a level for (every
  call's own group, and the root's any-index one), kept in step with the statistics, so a
  run's levels cost no fold of the node queues.

Scoring a run changes nothing (`score`); a run is learned into the predictors and means only
once the streak has judged it (`learn`), so a held run leaves the scorer as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, cast

from mypy_extensions import mypyc_attr

from worker.learner.analysis import CallObservation, scores_of
from worker.learner.backoff import Parent, RankTable, own_p90, rank_table, uppers
from worker.learner.config import LearnerConfig
from worker.learner.evaluation import CallScore, Scorer, score_against, unserved
from worker.learner.exact_sums import FAST_SHIFT, Mean, add_exact, exact
from worker.learner.hysteresis import NO_BAND, GroupKey, Levels
from worker.learner.predictor import Predictor, Values
from worker.learner.stats import EXACT_LIMIT

if TYPE_CHECKING:
    from worker.learner.state import AgentState

#: (a constant of this module: compiled, another module's is read from its namespace)
_FAST_SHIFT: Final = FAST_SHIFT
#: a run's shift evidence: (eligible calls, calls above their osl, calls below 2 p50 - osl)
Tally = tuple[int, int, int]


@mypyc_attr(acyclic=True)
class Group(Mean):
    """What the scorer keeps for one (name, call index) group: its predictor, its node's
    any-index group (its back-off parent, shared by the node's groups) and, with hysteresis,
    its score mean (the `Mean` it is) and its band (`hysteresis.Band`, as native floats):
    one object and one lookup per call; none more per group for the collector to walk."""

    __slots__ = ("approx", "high", "low", "parent", "predictor")

    def __init__(self, predictor: Predictor, parent: Parent | None, score: Mean | None) -> None:
        if score is None:
            super().__init__()
        else:
            super().__init__(score.count, score.units, score.shift)
        self.predictor = predictor
        self.parent = parent
        self.approx, self.low, self.high = NO_BAND  # none until its level is first set


class AdaptiveScorer(Scorer):
    """`Scorer` for the adaptive rule set (see the module docstring)."""

    __slots__ = (
        "evaluate",
        "found",
        "groups",
        "hysteresis",
        "margin",
        "min_samples",
        "parents",
        "priors",
        "ranks",
        "root_approx",
        "root_high",
        "root_low",
        "root_p90",
        "scale",
        "scored",
        "shift_calls",
        "shift_share",
        "tally",
    )

    def __init__(self, state: AgentState, config: LearnerConfig) -> None:
        super().__init__(state)
        settings = config.adaptive
        k = settings.backoff_samples
        self.ranks: RankTable | None = rank_table(k) if k else None
        #: the settings a run reads, as native fields (a settings field is a Python lookup)
        self.scale = config.scale
        self.evaluate = config.evaluate
        self.min_samples = settings.shift_min_samples
        self.shift_calls = settings.shift_calls
        self.shift_share = settings.shift_share
        self.priors = settings.priors
        self.margin = settings.hysteresis
        self.hysteresis = settings.hysteresis > 0
        #: with back-off: each node's any-index group (`Parent`), kept current by `learn`;
        #: the root's back-off p90, with the root's sample count it was read at, is read
        #: from the statistics (needed only while a node is short of samples, or for a call
        #: of a new name)
        self.parents: dict[str, Parent] | None = None
        self.root_p90: tuple[int, float | None] = (-1, None)
        #: the root's band (`hysteresis.Band`), as native floats
        self.root_approx, self.root_low, self.root_high = NO_BAND
        if k:
            self.parents = {
                name: Parent.of(node.any_index) for name, node in state.children.items()
            }
        self.tally: Tally = (0, 0, 0)
        self.groups: dict[GroupKey, Group] = {}
        for name, node in state.children.items():
            for index, group in node.by_index.items():
                key: GroupKey = (name, index)
                score = group.score if self.hysteresis else None
                self.groups[key] = Group(self.predictors[key], self._parent_of(name), score)
        self.predictors = {}  # the groups hold them
        #: the observations `score` last read, and the group of each (None: new)
        self.scored: list[CallObservation] | None = None
        self.found: list[Group | None] = []

    def score(self, state: AgentState, observations: list[CallObservation]) -> list[CallScore]:
        """Each call of one run against the state before the run, with the back-off osl;
        sets `tally`. Changes nothing: `learn` the run once it is to be learned."""
        groups = self.groups
        ranks = self.ranks
        min_samples = self.min_samples
        eligible = above = below = 0
        scores: list[CallScore] = []
        append = scores.append
        found: list[Group | None] = []
        for obs in observations:
            name, index, _, _, y, _ = obs
            group = groups.get((name, index))
            found.append(group)
            if group is not None:
                predictor = group.predictor
                osl, p50, remaining_mean, gap_mean = predictor.values
                count = predictor.count
                if ranks is not None and count <= EXACT_LIMIT:
                    rank = ranks[count][0]
                    if rank <= count:
                        osl = predictor.tokens[rank - 1]
                    else:
                        parent = self._leaned(state, group.parent)  # type: ignore[arg-type]
                        top = predictor.tokens[count - 1]
                        osl = top if parent <= top else int(parent + 0.5)
                if count >= min_samples:
                    eligible += 1
                    if y > osl:
                        above += 1
                    elif y < 2 * p50 - osl:
                        below += 1
            else:
                values = self._fallback(state, obs)
                if values is None:
                    append(unserved(obs))
                    continue
                osl, p50, remaining_mean, gap_mean = values
            append(score_against("trie", (osl, p50, remaining_mean, gap_mean), obs))
        self.tally = (eligible, above, below)
        self.scored, self.found = observations, found
        return scores

    def learn(
        self,
        observations: list[CallObservation],
        units: list[int | None],
        levels: Levels,
        scale: int,
    ) -> None:
        """Learn a run the state folds: its calls into their groups' predictors and parents,
        its scores into the means (and, with hysteresis, the levels of the groups it
        touched). The groups `score` found for these observations are taken as found."""
        rows = cast(list[tuple[Any, ...]], observations)  # as they are (`AgentState.queue`)
        if len(units) != len(rows):
            raise ValueError("a unit per observation")
        found = self.found if observations is self.scored else None
        self.scored = None
        margin = self.margin
        hysteresis = self.hysteresis
        total = 0.0  # the run's scores: as floats, in order, and exactly (None: not in units)
        units_sum: int | None = 0
        for i in range(len(rows)):
            obs = rows[i]
            group = None if found is None else found[i]
            if group is None:
                group = self._group(obs[:2])
            group.predictor.add(obs[4], obs[2], obs[3])
            parent = group.parent
            if parent is not None:
                parent.add(obs[4], obs[2], obs[3])
            score: float = obs[5]
            unit = units[i]
            total += score
            units_sum = None if unit is None or units_sum is None else units_sum + unit
            if not hysteresis:
                continue
            count = group.count = group.count + 1  # one score in, as `Mean.add_fast` adds it
            if unit is not None and group.shift == _FAST_SHIFT:
                group.units += unit
            else:
                group.units, group.shift = add_exact(group.units, group.shift, *exact(score))
            approx = group.approx  # the float mean, moved; inside the band the level stays
            moved = approx + (score - approx) / count
            if group.low <= moved < group.high:
                group.approx = moved
                continue
            key: GroupKey = obs[:2]
            group.approx, group.low, group.high = levels.update(key, group, scale, margin)
        self._learn_root(observations, units, units_sum)
        if margin:
            self._learn_root_level(len(rows), total, levels, scale, margin)

    def means(self) -> dict[GroupKey, Mean]:
        """With hysteresis: the score mean of each group keeping a level (the root's too)."""
        found: dict[GroupKey, Mean] = {(None, 0): self.root_score}
        if self.hysteresis:
            found.update(self.groups)
        return found

    def _group(self, key: GroupKey) -> Group:
        """The group of a (name, call index) key, new when the agent has none yet."""
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(Predictor(), self._parent_of(key[0]), None)
        return group

    def _parent_of(self, name: str) -> Parent | None:
        """Node `name`'s `Parent` (with back-off; new when the node is)."""
        parents = self.parents
        if parents is None:
            return None
        parent = parents.get(name)
        if parent is None:
            parent = parents[name] = Parent()
        return parent

    def default_level(self, levels: Levels, scale: int) -> int | None:
        """The agent's default latency sensitivity: the root's published level."""
        return levels.get((None, 0)) if self.hysteresis else self.root_level(scale)

    def _fallback(self, state: AgentState, obs: CallObservation) -> Values | None:
        """For a call whose name or index is new to the agent, the prediction the lookup
        falls back to (`Scorer._new_group`), with its back-off osl; None before the agent's
        first LLM call."""
        name, index = obs[0], obs[1]
        parents = self.parents
        if parents is not None and name in parents:  # a node the agent has: its `Parent`
            parent = parents[name]
            return parent.values(int(self._leaned(state, parent) + 0.5))
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
        values = Predictor.of(group).values
        if self.ranks is None:
            return values
        assert node is None  # with back-off, every node has its `Parent`
        found: float | None
        if index <= root.high:
            behind = self._root_parent(state)
            backoff = uppers(
                group.output_tokens, None if behind is None else (behind, behind), self.ranks
            )
            found = None if backoff is None else backoff[0]
        else:
            found = self._root_parent(state)
        assert found is not None  # the group has samples
        return int(found + 0.5), *values[1:]

    def _leaned(self, state: AgentState, parent: Parent) -> float:
        """The back-off p90 of output tokens of a node's any-index group (its `Parent`), as
        the statistics stand before the run (no fold of the node's queue)."""
        ranks: RankTable = self.ranks  # type: ignore[assignment]
        found = parent.p90(ranks)
        if parent.beyond(ranks):  # beyond its samples: the root's counts too
            root = self._root_parent(state)
            if root is not None and root > found:
                found = root
        return found

    def _root_parent(self, state: AgentState) -> float | None:
        """The back-off p90 of output tokens of the root's any-index group (None without
        samples), read again only once the root has learned more."""
        root = state.root
        count = root.samples  # does not fold the queue
        cached = self.root_p90
        if cached[0] == count:
            return cached[1]
        own = own_p90(root.any_index.output_tokens, self.ranks)  # type: ignore[arg-type]
        found = None if own is None else own[0]
        self.root_p90 = (count, found)
        return found

    def _learn_root(
        self, observations: list[CallObservation], units: list[int | None], units_sum: int | None
    ) -> None:
        """The run's scores into the root's mean (`units_sum`: their sum in units, None when
        one is not a whole number of them), as `Mean.add_fast` adds them."""
        root = self.root_score
        if units_sum is not None and root.shift == _FAST_SHIFT:
            root.count += len(units)
            root.units += units_sum
        else:
            root.add_fast(units, scores_of(observations))
        self.level = None

    def _learn_root_level(
        self, calls: int, total: float, levels: Levels, scale: int, margin: float
    ) -> None:
        """The root's level after a run of `calls` calls whose scores sum to `total`."""
        root = self.root_score
        approx = self.root_approx
        moved = approx + (total - calls * approx) / root.count
        if self.root_low <= moved < self.root_high:
            self.root_approx = moved
            return
        band = levels.update((None, 0), root, scale, margin)
        self.root_approx, self.root_low, self.root_high = band
