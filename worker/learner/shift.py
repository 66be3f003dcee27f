"""Decay (the `adaptive` rule set): an agent forgets what it learned before its behaviour
changed.

All runs count alike under SPEC 4.6, so after a change of model or prompt (say from ~300 to
~900 output tokens) an agent's hints stay wrong for as many runs as it took to learn the old
ones. Here each run's scored calls are the evidence (`AdaptiveScorer.tally`): the calls whose
own (name, call index) group had at least `shift_min_samples` samples are *eligible*; one is
*above* when its output tokens exceed its `osl`, *below* when they are under `2 p50 - osl`.
A run whose eligible calls are at least `shift_share` above (or below) extends a streak on that
side; any other run with LLM calls ends the streak. Once a streak holds `shift_calls` calls
beyond, the agent's statistics are replaced by those of the streak's runs alone: everything
learned before the streak's first run is forgotten.

Nothing here reads a clock: the same runs in the same order give the same state, in the
worker and in `replay`, and a duplicate (never learned) changes nothing. A streak keeps its
runs' observations until it ends, at most `shift_calls` runs (each adds a call beyond).
"""

from __future__ import annotations

from typing import Any

from worker.learner.analysis import CallObservation, new_observation
from worker.learner.config import AdaptiveSettings

#: a run kept by a streak: its observations and the model of each call (None: priors off)
KeptRun = tuple[list[CallObservation], list[str | None] | None]


class Streak:
    """The runs in a row whose eligible calls were beyond their predictions on one side."""

    __slots__ = ("beyond", "runs", "side")

    def __init__(self) -> None:
        self.side = 0  # 1 above, -1 below, 0 no streak
        self.beyond = 0  # calls beyond, over the streak's runs
        self.runs: list[KeptRun] = []

    def observe(
        self, tally: tuple[int, int, int], run: KeptRun, settings: AdaptiveSettings
    ) -> list[KeptRun] | None:
        """After a run with LLM calls was scored (`tally`: eligible, above, below): extend,
        restart or end the streak. Returns the streak's runs, this one last, when they make
        a shift (the streak then starts over), else None."""
        eligible, above, below = tally
        threshold = settings.shift_share * eligible
        if eligible and above >= threshold:
            side, beyond = 1, above
        elif eligible and below >= threshold:
            side, beyond = -1, below
        else:
            self.clear()
            return None
        if side != self.side:
            self.side, self.beyond, self.runs = side, 0, []
        self.beyond += beyond
        self.runs.append(run)
        if self.beyond < settings.shift_calls:
            return None
        runs = self.runs
        self.clear()
        return runs

    def clear(self) -> None:
        self.side, self.beyond, self.runs = 0, 0, []

    def dump(self) -> list[Any]:
        return [
            self.side,
            self.beyond,
            [[[list(o) for o in obs], models] for obs, models in self.runs],
        ]

    @classmethod
    def load(cls, data: Any) -> Streak:
        side, beyond, runs = data
        if side not in (-1, 0, 1) or type(beyond) is not int or beyond < 0:
            raise ValueError("streak: side in -1..1 and a count of calls beyond")
        streak = cls()
        streak.side, streak.beyond = side, beyond
        for observations, models in runs:
            kept = [new_observation(tuple(row)) for row in observations]
            if any(len(o) != 6 for o in kept) or (models is not None and len(models) != len(kept)):
                raise ValueError("streak: a kept run's columns differ in length")
            streak.runs.append((kept, models))
        return streak

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Streak)
            and (self.side, self.beyond) == (other.side, other.beyond)
            and [(list(map(tuple, o)), m) for o, m in self.runs]
            == [(list(map(tuple, o)), m) for o, m in other.runs]
        )
