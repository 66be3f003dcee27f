"""Learner settings: which semantics (SPEC section 4), the score weights and the scale."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Semantics = Literal["corrected", "nemo-flow"]


class Weights(BaseModel):
    """Weights of the sensitivity score's four parts (SPEC 4.5)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    critical: float = 0.5
    fanout: float = 0.3
    position: float = 0.2
    parallel: float = 0.0


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
    #: agent's recent accuracy. It costs about as much again as learning (docs/accuracy.md);
    #: off, learning returns no scores and states keep no recent accuracy.
    evaluate: bool = True
