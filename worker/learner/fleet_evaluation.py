"""SPEC 10 over a stream of runs (`replay --evaluate`): our hints, and the baselines scored on
the same calls.

- ours: each agent's trie, as learning scores it (`AgentState.learn`);
- `agent_default`: the agent's root any-index prediction (its default hints), no lookup;
- `fleet`: one root any-index prediction learned from every agent's runs so far;
- the other semantics: a second fleet learning the same runs under the other rules.

Under the adaptive rule set with priors, a call of an agent without history (source `none`
for its own state) is scored against the prior a router would pool from the fleet's tries
at that moment (`worker.learner.priors`): source `prior`.

Pure: no Kafka, no I/O. The totals keep every scored call's p50 and output tokens for
Kendall's tau-b.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

from worker.learner.adaptive_trie import AdaptiveTrie
from worker.learner.analysis import CallObservation
from worker.learner.config import LearnerConfig
from worker.learner.evaluation import CallScore, Learned, Source, score_against, unserved
from worker.learner.fleet import Fleet
from worker.learner.kendall import tau_b
from worker.learner.limits import Limits
from worker.learner.predictor import Predictor, Values
from worker.learner.priors import PriorIndex
from worker.learner.rounding import saturate_u32
from worker.models import Run

#: the numbers every scorer reports, in SPEC 10's order
SCORE_KEYS = ("scored", "osl_coverage", "osl_mae", "osl_tau", "iat_mae_ms", "remaining_mae")


@dataclass
class Tally:
    """Running totals of calls and their scores (numbers kept as machine values: 8 bytes
    each, 100,000 runs of 8 calls hold 25 MB)."""

    sources: dict[Source, int] = field(
        default_factory=lambda: {"trie": 0, "agent_default": 0, "none": 0}
    )
    covered: int = 0
    p50s: array[float] = field(default_factory=lambda: array("d"))
    tokens: array[int] = field(default_factory=lambda: array("q"))
    iat_errors: array[float] = field(default_factory=lambda: array("d"))
    remaining_errors: array[float] = field(default_factory=lambda: array("d"))

    def add(self, scores: list[CallScore]) -> None:
        for score in scores:
            self.sources[score.source] += 1
            if score.source == "none":
                continue
            self.covered += score.covered
            self.p50s.append(score.p50)
            self.tokens.append(score.output_tokens)
            if score.iat_error_ms is not None:
                self.iat_errors.append(score.iat_error_ms)
            self.remaining_errors.append(score.remaining_error)

    @property
    def calls(self) -> int:
        return sum(self.sources.values())

    def summary(self) -> dict[str, Any]:
        """`scored` and SPEC 10's numbers over the scored calls (None where undefined)."""
        scored = len(self.p50s)
        osl_errors = map(abs, map(float.__sub__, self.p50s, map(float, self.tokens)))
        tokens = self.tokens.tolist()
        return {
            "scored": scored,
            "osl_coverage": self.covered / scored if scored else None,
            "osl_mae": _mean(osl_errors, scored),
            "osl_tau": tau_b(self.p50s.tolist(), tokens),
            "iat_mae_ms": _mean(self.iat_errors, len(self.iat_errors)),
            "remaining_mae": _mean(self.remaining_errors, scored),
        }


def _mean(values: Any, count: int) -> float | None:
    return math.fsum(values) / count if count else None


class Evaluation:
    """Learns runs as `Fleet` does, scoring ours and the baselines on every call."""

    def __init__(self, config: LearnerConfig, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        config = config.model_copy(update={"evaluate": True})
        self.fleet = Fleet(config, limits)
        #: the baseline rule set: nemo-flow beside corrected, corrected beside the others
        self.other_semantics = "nemo-flow" if config.semantics == "corrected" else "corrected"
        other = config.model_copy(update={"semantics": self.other_semantics})
        self.other_fleet = Fleet(other, limits)
        self.runs = 0
        self.level_flips = 0
        adaptive = config.adaptive_on
        #: the fleet's priors as the agents' tries stand (adaptive rule set with priors)
        self.priors = PriorIndex() if adaptive is not None and adaptive.priors else None
        self.ours = Tally()
        if self.priors is not None:
            self.ours.sources = {"trie": 0, "agent_default": 0, "prior": 0, "none": 0}
        self.agent_default = Tally()
        self.pooled = Tally()
        self.other = Tally()
        #: the root any-index prediction of each agent, and of all runs pooled
        self._agent_roots: dict[str, Predictor] = {}
        self._pooled_root = Predictor()
        #: the last run's scores by scorer: "ours", "agent_default", "fleet", the other semantics
        self.last: dict[str, list[CallScore]] = {}

    def learn(self, run: Run) -> Learned | None:
        """Learn and score one run (None for a duplicate: neither learned nor scored);
        RecordError (`limits`) as `Fleet.learn`, with nothing learned or scored."""
        learned = self.fleet.learn(run)
        if learned is None:
            return None
        other = self.other_fleet.learn(run)
        assert other is not None  # the same run ids, the same limits
        self.runs += 1
        self.level_flips += learned.level_flipped
        observations = learned.observations
        root = self._agent_roots.setdefault(run.agent_id, Predictor())
        ours = learned.scores
        if self.priors is not None:
            ours = self._prior_scores(learned)
            state = self.fleet.states[run.agent_id]
            self.priors.set_components(
                run.agent_id, AdaptiveTrie(state, self.fleet.config).components()
            )
        self.last = {
            "ours": ours,
            "agent_default": _against_root(root, observations),
            "fleet": _against_root(self._pooled_root, observations),
            self.other_semantics: other.scores,
        }
        self.ours.add(ours)
        self.agent_default.add(self.last["agent_default"])
        self.pooled.add(self.last["fleet"])
        self.other.add(other.scores)
        return learned

    def _prior_scores(self, learned: Learned) -> list[CallScore]:
        """The run's scores, its calls with nothing from their agent scored against the
        fleet's prior for their name and model (unserved without one)."""
        scores = learned.scores
        if not scores or scores[0].source != "none":  # a run's calls are all served, or none
            return scores
        priors = self.priors
        assert priors is not None and learned.models is not None
        found = []
        for obs, model in zip(learned.observations, learned.models, strict=True):
            prior = priors.prediction(obs[0], model)
            found.append(
                unserved(obs) if prior is None else score_against("prior", _values(prior), obs)
            )
        return found

    def summary(self) -> dict[str, Any]:
        """SPEC 10's report: `replay --evaluate --json`."""
        ours = self.ours
        calls = ours.calls
        served = calls - ours.sources["none"]
        return {
            "semantics": self.fleet.config.semantics,
            "runs": self.runs,
            "calls": calls,
            "served": served / calls if calls else None,
            "sources": dict(ours.sources),
            **ours.summary(),
            "level_flips_per_100_runs": self.level_flips * 100 / self.runs if self.runs else None,
            "baselines": {
                "fleet": self.pooled.summary(),
                "agent_default": self.agent_default.summary(),
                self.other_semantics: self.other.summary(),
            },
        }


def _values(prior: dict[str, Any]) -> Values:
    """What a call is scored against in a prior: (osl, p50, remaining mean, gap mean)."""
    tokens, gaps = prior["output_tokens"], prior["interarrival_ms"]
    return (
        saturate_u32(tokens["p90"]),
        tokens["p50"],
        prior["remaining_calls"]["mean"],
        gaps["mean"] if gaps["sample_count"] else None,
    )


def _against_root(root: Predictor, observations: list[CallObservation]) -> list[CallScore]:
    """Every call against one root any-index prediction (the same for the whole run, as
    it stood before the run), which then learns the run. Both baselines are an agent-wide
    prediction: their calls count as `agent_default`."""
    values = root.values if root.count else None
    scores = [
        unserved(obs) if values is None else score_against("agent_default", values, obs)
        for obs in observations
    ]
    for obs in observations:
        root.add(obs[4], obs[2], obs[3])
    return scores
