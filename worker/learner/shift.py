"""Decay (the `adaptive` rule set): an agent forgets what it learned before its behaviour
changed.

All runs count alike under SPEC 4.6, so after a change of model or prompt (say from ~300 to
~900 output tokens) an agent's hints stay wrong for as many runs as it took to learn the old
ones. Here each run's scored calls are the evidence (`AdaptiveScorer.tally`): the calls whose
own (name, call index) group had at least `shift_min_samples` samples are *eligible*; one is
*above* when its output tokens exceed its `osl`, *below* when they are under `2 p50 - osl`.
A run whose eligible calls are at least `shift_share` above (or below) extends a streak on that
side and is held, not learned yet, so the next runs are judged against the statistics from
before the streak (one sample beyond would otherwise widen the very prediction the next is
compared with); any other run with LLM calls ends the streak, and the held runs are learned,
in order, before it. Once a streak holds `shift_calls` calls beyond, the agent's statistics
are replaced by those of the streak's runs alone: everything learned before the streak's
first run is forgotten.

Nothing here reads a clock: the same runs in the same order give the same state, in the
worker and in `replay`, and a duplicate (never learned) changes nothing. A streak keeps its
runs' observations until it ends, at most `shift_calls` runs (each adds a call beyond), and
their hints lag by as many runs meanwhile.
"""

from __future__ import annotations

from typing import Any, cast

from worker.learner.analysis import CallObservation

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
        self, tally: tuple[int, int, int], run: KeptRun, share: float, calls: int
    ) -> tuple[list[KeptRun], bool]:
        """Judge a run with LLM calls once scored (`tally`: eligible, above, below): the runs
        to learn now, in order, and whether they make a shift (then the agent learns them
        alone). A run beyond its hints is held by the streak, not learned, so that the runs
        after it are judged against the statistics from before the streak; a run that is not
        beyond ends the streak, its held runs learned first. (`share` and `calls`: the
        settings' `shift_share` and `shift_calls`.)"""
        eligible, above, below = tally
        threshold = share * eligible
        if eligible and above >= threshold:
            side, beyond = 1, above
        elif eligible and below >= threshold:
            side, beyond = -1, below
        else:
            released = [*self.runs, run]
            self.clear()
            return released, False
        released = []
        if side != self.side:  # the other side: the held runs are learned, a new streak
            released = self.runs
            self.side, self.beyond, self.runs = side, 0, []
        self.beyond += beyond
        self.runs.append(run)
        if self.beyond < calls:
            return released, False
        streak = self.runs
        self.clear()
        return streak, True

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
            rows = [tuple(row) for row in observations]
            if any(len(o) != 6 for o in rows) or (models is not None and len(models) != len(rows)):
                raise ValueError("streak: a kept run's columns differ in length")
            streak.runs.append((cast(list[CallObservation], rows), models))
        return streak

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Streak)
            and (self.side, self.beyond) == (other.side, other.beyond)
            and [(list(map(tuple, o)), m) for o, m in self.runs]
            == [(list(map(tuple, o)), m) for o, m in other.runs]
        )
