"""Seeded Poisson arrivals: the same runs at the same offsets for every arm of a phase."""

from __future__ import annotations

import random
from dataclasses import dataclass

from benchmarks.dynamo.programs import PROGRAMS


@dataclass(frozen=True)
class Arrival:
    #: seconds after the phase starts
    at_s: float
    program: str
    #: the run's sizes come from it (`programs.call_sizes`)
    seed: int


def poisson_schedule(rate_per_s: float, seconds: float, seed: int) -> list[Arrival]:
    """Runs arriving at `rate_per_s` on average for `seconds`, programs drawn evenly."""
    rng = random.Random(seed)
    names = sorted(PROGRAMS)
    out: list[Arrival] = []
    at = rng.expovariate(rate_per_s)
    while at < seconds:
        out.append(Arrival(at, rng.choice(names), rng.randrange(2**31)))
        at += rng.expovariate(rate_per_s)
    return out


def program_sequence(count: int, seed: int) -> list[tuple[str, int]]:
    """(program, run seed) pairs drawn evenly, for closed-loop phases."""
    rng = random.Random(seed)
    names = sorted(PROGRAMS)
    return [(rng.choice(names), rng.randrange(2**31)) for _ in range(count)]


def learning_schedule(rate_per_s: float, runs_per_program: int, seed: int) -> list[Arrival]:
    """Exactly `runs_per_program` runs of each program, shuffled, at Poisson times."""
    rng = random.Random(seed)
    programs = [name for name in sorted(PROGRAMS) for _ in range(runs_per_program)]
    rng.shuffle(programs)
    out: list[Arrival] = []
    at = 0.0
    for program in programs:
        at += rng.expovariate(rate_per_s)
        out.append(Arrival(at, program, rng.randrange(2**31)))
    return out
