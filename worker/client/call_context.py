"""SPEC 8's call context: which call of its run, by name, a request is.

The learner numbers a run's LLM calls per name (SPEC 4.3b: the k-th call named "writer" in
that run has call index k). A router sees the requests one by one, so it counts them the
same way: per `(agent_id, run_id)` and call name, this request included. NeMo Relay's
intercept counts every request of its process instead, never per run.

Memory stays bounded: a run is forgotten after `idle_s` without a call, and at most
`max_runs` runs are held (the least recently used go first). A forgotten run that calls
again starts counting from 1, as a new run would.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class CallCounter:
    """Call indexes per run and name, with idle runs forgotten."""

    def __init__(
        self,
        idle_s: float = 600.0,
        max_runs: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_s <= 0 or max_runs < 1:
            raise ValueError("idle_s must be > 0 and max_runs >= 1")
        self.idle_s = idle_s
        self.max_runs = max_runs
        self._clock = clock
        #: (agent_id, run_id) -> (last call time, first call time, {name: calls so far}),
        #: least recently used first
        self._runs: OrderedDict[tuple[str, str], tuple[float, float, dict[str, int]]] = (
            OrderedDict()
        )
        #: idle runs are swept at most this often (a sweep is O(runs forgotten))
        self._sweep_every_s = min(1.0, idle_s / 10)
        self._next_sweep = clock() + self._sweep_every_s

    def __len__(self) -> int:
        return len(self._runs)

    def next_call(self, agent_id: str, run_id: str, name: str) -> int:
        """Count one more call named `name` in this run; returns its call index (1-based)."""
        return self.next_call_and_age(agent_id, run_id, name)[0]

    def next_call_and_age(self, agent_id: str, run_id: str, name: str) -> tuple[int, float]:
        """`next_call`, and the run's age (`run_age_s`) once this call is counted."""
        now = self._clock()
        key = (agent_id, run_id)
        runs = self._runs
        entry = runs.pop(key, None)
        if entry is not None and now - entry[0] <= self.idle_s:
            started, counts = entry[1], entry[2]
        else:
            started, counts = now, {}
        index = counts.get(name, 0) + 1
        counts[name] = index
        runs[key] = (now, started, counts)  # re-inserted: most recently used last
        if len(runs) > self.max_runs or now >= self._next_sweep:
            self._forget_old(now)
        return index, now - started

    def peek(self, agent_id: str, run_id: str, name: str) -> int:
        """Calls named `name` this run has made so far (0 for an unknown run)."""
        entry = self._runs.get((agent_id, run_id))
        return entry[2].get(name, 0) if entry is not None else 0

    def run_age_s(self, agent_id: str, run_id: str) -> float:
        """Seconds since the run's first call (as counted here); 0 for an unknown run."""
        entry = self._runs.get((agent_id, run_id))
        return self._clock() - entry[1] if entry is not None else 0.0

    def end_run(self, agent_id: str, run_id: str) -> None:
        """Forget a run now (the agent said it ended)."""
        self._runs.pop((agent_id, run_id), None)

    def _forget_old(self, now: float) -> None:
        self._next_sweep = now + self._sweep_every_s
        runs = self._runs
        while len(runs) > self.max_runs:
            runs.popitem(last=False)
        horizon = now - self.idle_s
        while runs:
            oldest = next(iter(runs.values()))
            if oldest[0] >= horizon:
                break
            runs.popitem(last=False)
