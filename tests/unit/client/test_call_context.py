"""SPEC 8 call context: call indexes per run and name, runs forgotten when idle."""

from __future__ import annotations

import pytest

from worker.client import CallCounter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_indexes_count_per_run_and_name_like_the_learner() -> None:
    calls = CallCounter()
    names = ["plan", "write", "plan", "write", "write", "critic"]
    got = [calls.next_call("agent", "run-1", name) for name in names]
    assert got == [1, 1, 2, 2, 3, 1]


def test_runs_and_agents_count_separately() -> None:
    calls = CallCounter()
    assert calls.next_call("a", "r1", "plan") == 1
    assert calls.next_call("a", "r2", "plan") == 1
    assert calls.next_call("b", "r1", "plan") == 1  # same run id, other agent
    assert calls.next_call("a", "r1", "plan") == 2
    assert len(calls) == 3


def test_idle_runs_are_forgotten() -> None:
    clock = Clock()
    calls = CallCounter(idle_s=60, clock=clock)
    calls.next_call("a", "old", "plan")
    clock.now += 30
    calls.next_call("a", "busy", "plan")
    clock.now += 31  # "old" idle for 61 s, "busy" for 31 s
    calls.next_call("a", "new", "plan")
    assert calls.peek("a", "old", "plan") == 0
    assert calls.peek("a", "busy", "plan") == 1
    assert len(calls) == 2
    assert calls.next_call("a", "old", "plan") == 1  # starts again, as a new run would


def test_an_idle_run_restarts_even_before_the_next_sweep() -> None:
    clock = Clock()
    calls = CallCounter(idle_s=60, clock=clock)
    assert calls.next_call("a", "r", "plan") == 1
    clock.now += 60.5  # sweeps run at most every second: this one comes first
    assert calls.next_call("a", "r", "plan") == 1


def test_a_call_keeps_its_run_alive() -> None:
    clock = Clock()
    calls = CallCounter(idle_s=60, clock=clock)
    for _ in range(5):
        calls.next_call("a", "long", "plan")
        clock.now += 50
    assert calls.next_call("a", "long", "plan") == 6


def test_at_most_max_runs_are_held_least_recently_used_first_out() -> None:
    calls = CallCounter(max_runs=2)
    calls.next_call("a", "r1", "x")
    calls.next_call("a", "r2", "x")
    calls.next_call("a", "r1", "x")  # r1 used most recently
    calls.next_call("a", "r3", "x")
    assert len(calls) == 2
    assert calls.peek("a", "r2", "x") == 0
    assert calls.peek("a", "r1", "x") == 2


def test_end_run_forgets_it() -> None:
    calls = CallCounter()
    calls.next_call("a", "r1", "x")
    calls.end_run("a", "r1")
    calls.end_run("a", "never-seen")
    assert len(calls) == 0


@pytest.mark.parametrize(("idle_s", "max_runs"), [(0, 10), (-1, 10), (10, 0)])
def test_bad_limits_are_refused(idle_s: float, max_runs: int) -> None:
    with pytest.raises(ValueError, match="idle_s"):
        CallCounter(idle_s=idle_s, max_runs=max_runs)
