"""Learner settings: which rule set (SPEC sections 4 and 6), the score weights, the scale, and
the `adaptive` rule set's pieces."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Semantics = Literal["corrected", "nemo-flow", "adaptive"]
#: every rule set's name, in one place (settings, `run --semantics`, `replay --semantics`)
SEMANTICS: tuple[Semantics, ...] = get_args(Semantics)


class Weights(BaseModel):
    """Weights of the sensitivity score's four parts (SPEC 4.5)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    critical: float = 0.5
    fanout: float = 0.3
    position: float = 0.2
    parallel: float = 0.0


class AdaptiveSettings(BaseModel):
    """The pieces the `adaptive` rule set adds to `corrected` (SPEC 6, "The adaptive rule
    set"); each one off (0 or false) leaves the corrected rules exactly. Ignored under the
    other rule sets. Defaults chosen on the scenario fleets (docs/accuracy.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: back-off: pseudo-samples of the parent behind a prediction's upper percentiles (p90,
    #: p95 from the order statistic of rank ceil(q (n + k)), the parent's beyond the samples)
    backoff_samples: float = Field(default=1.0, ge=0, le=100)
    #: decay: scored calls beyond their prediction, in a streak of runs, that make the agent
    #: forget everything learned before the streak (a change of model or prompt); 0 = off
    shift_calls: int = Field(default=5, ge=0, le=10_000)
    #: ... a run extends the streak when at least this share of its eligible calls is beyond
    #: their prediction, all on the same side
    shift_share: float = Field(default=0.75, gt=0, le=1)
    #: ... eligible calls: those whose own (name, call index) group has this many samples
    shift_min_samples: int = Field(default=5, ge=1, le=100)
    #: priors: trie nodes carry their call's model, from which routers pool hints for agents
    #: without history (`worker.learner.priors`)
    priors: bool = True
    #: hysteresis: a published level moves only once the score passes the boundary by this
    #: much (in levels); 0 = off
    hysteresis: float = Field(default=0.1, ge=0, lt=0.5)
    #: levels comparable across agents: a call's score is its step's share of the run's
    #: duration, not normalised within the run
    comparable_levels: bool = True

    @classmethod
    def off(cls) -> AdaptiveSettings:
        """Every piece off: exactly the corrected rules."""
        return cls(
            backoff_samples=0,
            shift_calls=0,
            priors=False,
            hysteresis=0,
            comparable_levels=False,
        )


class LearnerConfig(BaseModel):
    """Everything that changes what is learned; the same config must be used for a state's life."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    semantics: Semantics = "corrected"
    weights: Weights = Weights()
    scale: int = Field(default=5, ge=2, le=100)
    #: how many recent run ids are remembered to skip duplicates (SPEC section 1: at least
    #: 100,000): per partition in the worker (16 bytes each, stored once in sealed chunks),
    #: over the whole input in `replay`. 0 remembers none.
    dedupe_window: int = Field(default=100_000, ge=0)
    #: score each run's calls before learning it (SPEC 10): the per-call scores and each
    #: agent's recent accuracy. It costs about as much again as learning; off, learning
    #: returns no scores and states keep no recent accuracy.
    evaluate: bool = True
    #: the adaptive rule set's pieces (only read when `semantics` is "adaptive")
    adaptive: AdaptiveSettings = AdaptiveSettings()

    @property
    def adaptive_on(self) -> AdaptiveSettings | None:
        """The adaptive settings when this config learns under `adaptive`, else None."""
        return self.adaptive if self.semantics == "adaptive" else None
