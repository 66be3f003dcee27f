"""Seeded fleets that stress a learner where users of such learners get hurt (issue 24).

- `stationary`: 40 agents x 60 runs whose behaviour never changes (the baseline every rule
  must keep);
- `drift`: 40 agents x 80 runs; half-way through, half of them change model or prompt: their
  output tokens triple and their call mix changes (a step renamed, one added);
- `drift_every`: the same, every agent changing;
- `cold_start`: an established fleet (40 agents x 50 runs), then 1,000 new agents with 5 runs
  each, built from the same call names and models (what the fleet already knows);
- `boundary`: 40 agents x 80 runs mixing short and long chains in the proportion that puts
  their mean latency-sensitivity score on the boundary between two levels (where a
  published level flaps).

Call names keep one model and one typical size fleet-wide (a `writer` on `gpt-4o` writes
~900 tokens whoever calls it), scaled per agent by 0.7-1.4; fan-outs run same-named calls in
parallel; tool calls sit between some steps. Runs are in time order across agents. Each LLM
call also carries `true_median_tokens`, the median of the distribution its output tokens were
drawn from (lognormal, sigma `SPREAD`): the learner ignores it (SPEC 2: fields not listed are
ignored), `benchmarks.adaptive` scores it as the bound no learner can pass.

Run: `python -m benchmarks.scenarios --out DIR [--seed N]` writes `NAME.runs.jsonl` for each.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from worker.demo_workload import call_record, run_record
from worker.learner import LearnerConfig
from worker.learner.analysis import SCORE, observe_run
from worker.models import parse_run
from worker.models.timestamps import NS_PER_MS

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
#: (call name, model, typical output tokens): the fleet's shared vocabulary
CALLS = (
    ("router", "gpt-4o-mini", 40),
    ("planner", "gpt-4o", 350),
    ("search-summarize", "llama-3.1-8b", 180),
    ("extract", "llama-3.1-70b", 120),
    ("sql-gen", "gpt-4o", 220),
    ("critic", "claude-3.5-sonnet", 260),
    ("reply", "gpt-4o-mini", 300),
    ("writer", "gpt-4o", 900),
    ("tag", "llama-3.1-8b", 25),
    ("translate", "llama-3.1-70b", 420),
)
MODEL = {name: model for name, model, _ in CALLS}
TOKENS = {name: tokens for name, _, tokens in CALLS}
TOOLS = ("search", "retriever", "sql", "browser")
#: decode speed of the simulated models, tokens per second (durations follow the tokens)
TOKENS_PER_S = 60.0
#: a call's output tokens are lognormal around its typical size with this sigma
SPREAD = 0.35
#: the field of a generated LLM call that holds its distribution's median (ignored by parsers)
TRUE_MEDIAN = "true_median_tokens"


@dataclass(frozen=True)
class Profile:
    """An agent: its steps in order, each a call name and how many run in parallel."""

    agent_id: str
    steps: tuple[tuple[str, int], ...]
    scale: float = 1.0  # this agent's prompts make calls this much longer or shorter
    tool_odds: float = 0.3
    #: per step, a further factor on its calls' tokens (empty: none)
    step_scales: tuple[float, ...] = ()
    #: the pause after each step, ms (the agent's own work between calls)
    think_ms: tuple[int, int] = (5, 300)

    def changed(self, rng: random.Random) -> Profile:
        """After a model or prompt change: three times the tokens, one step renamed, one
        step added."""
        steps = list(self.steps)
        at = rng.randrange(len(steps))
        others = [name for name, _, _ in CALLS if name not in {n for n, _ in steps}]
        steps[at] = (rng.choice(others), steps[at][1])
        steps.insert(rng.randrange(len(steps) + 1), (rng.choice(others), 1))
        return replace(self, steps=tuple(steps), scale=self.scale * 3)


def random_profile(rng: random.Random, agent_id: str) -> Profile:
    names = rng.sample([name for name, _, _ in CALLS], rng.randint(2, 4))
    steps = tuple((name, rng.choice((1, 1, 1, 2, 3))) for name in names)
    return Profile(agent_id, steps, scale=rng.uniform(0.7, 1.4))


def make_run(rng: random.Random, profile: Profile, start_ns: int) -> dict[str, Any]:
    """One run of `profile` starting at `start_ns`: its steps in order, fan-outs in
    parallel, sometimes a tool call between two steps."""
    calls: list[dict[str, Any]] = []
    cursor = start_ns
    scales = profile.step_scales or (1.0,) * len(profile.steps)
    for (name, width), step_scale in zip(profile.steps, scales, strict=True):
        if calls and rng.random() < profile.tool_odds:
            end = cursor + rng.randint(30, 600) * NS_PER_MS
            calls.append(call_record("tool", rng.choice(TOOLS), cursor, end))
            cursor = end + rng.randint(1, 20) * NS_PER_MS
        step_end = cursor
        for _ in range(width):
            typical = TOKENS[name] * profile.scale * step_scale
            tokens = max(1, round(rng.lognormvariate(math.log(typical), SPREAD)))
            begin = cursor + rng.randint(0, 30) * NS_PER_MS
            seconds = 0.15 + tokens / TOKENS_PER_S * rng.uniform(0.8, 1.25)
            end = begin + int(seconds * 1e9)
            call = call_record("llm", name, begin, end, tokens, MODEL[name])
            call[TRUE_MEDIAN] = typical
            calls.append(call)
            step_end = max(step_end, end)
        cursor = step_end + rng.randint(*profile.think_ms) * NS_PER_MS
    return run_record(rng, profile.agent_id, start_ns, cursor, calls)


def interleave(
    rng: random.Random,
    schedule: list[tuple[Profile, int]],
    start_ns: int,
    profile_at: Callable[[Profile, int], Profile] = lambda profile, _: profile,
) -> list[dict[str, Any]]:
    """`runs` runs of each profile, spread over time and sorted by start: each agent starts
    a run every 20-40 s on average; `profile_at(profile, k)` is the profile of its k-th run."""
    runs: list[dict[str, Any]] = []
    for profile, count in schedule:
        clock = start_ns + rng.randint(0, 30_000) * NS_PER_MS
        for k in range(count):
            runs.append(make_run(rng, profile_at(profile, k), clock))
            clock += rng.randint(20_000, 40_000) * NS_PER_MS
    runs.sort(key=lambda run: run["started_at"])
    return runs


def stationary(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    profiles = [random_profile(rng, f"steady-{i:03d}") for i in range(40)]
    return interleave(rng, [(p, 60) for p in profiles], START_NS)


def drift(seed: int, share: float = 0.5) -> list[dict[str, Any]]:
    """`share` of the agents change at their run 40."""
    rng = random.Random(seed + 1)
    profiles = [random_profile(rng, f"drift-{i:03d}") for i in range(40)]
    picked = rng.sample(profiles, int(len(profiles) * share))
    changed = {p.agent_id: p.changed(rng) for p in picked}

    def profile_at(profile: Profile, k: int) -> Profile:
        return changed.get(profile.agent_id, profile) if k >= 40 else profile

    return interleave(rng, [(p, 80) for p in profiles], START_NS, profile_at)


def drift_every(seed: int) -> list[dict[str, Any]]:
    """`drift` where every agent changes: the fleet-wide figures are then decay's alone,
    not diluted by agents that never change."""
    return drift(seed, share=1.0)


def cold_start(seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed + 2)
    established = [random_profile(rng, f"known-{i:03d}") for i in range(40)]
    runs = interleave(rng, [(p, 50) for p in established], START_NS)
    later = START_NS + 50 * 40_000 * NS_PER_MS  # after the established fleet's runs
    newcomers = [random_profile(rng, f"new-{i:04d}") for i in range(1_000)]
    return runs + interleave(rng, [(p, 5) for p in newcomers], later)


def boundary(seed: int) -> list[dict[str, Any]]:
    """Agents whose mean score sits where the published level turns from 2 to 3 (mean 0.375
    at scale 5): each mixes short runs (two chained calls, mean score 0.5) with long ones
    (five chained calls, ~0.33) in the proportion that averages on the boundary, so every
    run pushes the agent's mean a little to one side or the other."""
    rng = random.Random(seed + 3)
    mixes: dict[str, tuple[Profile, Profile, float]] = {}
    pool = [name for name, _, _ in CALLS]
    while len(mixes) < 40:
        agent_id = f"edge-{len(mixes):03d}"
        names = rng.sample(pool, 5)
        short = Profile(agent_id, tuple((n, 1) for n in names[:2]), tool_odds=0.0)
        long = Profile(agent_id, tuple((n, 1) for n in names), tool_odds=0.0)
        share = _short_share(random.Random(rng.random()), short, long)
        if share is not None:
            mixes[agent_id] = (short, long, share)

    def profile_at(profile: Profile, k: int) -> Profile:
        short, long, share = mixes[profile.agent_id]
        return short if random.Random(f"{seed}/{profile.agent_id}/{k}").random() < share else long

    return interleave(rng, [(short, 80) for short, _, _ in mixes.values()], START_NS, profile_at)


#: the mean score at which the default level turns from 2 to 3 (scale 5: level = round(4m)+1)
BOUNDARY_SCORE = 0.375


def _short_share(rng: random.Random, short: Profile, long: Profile) -> float | None:
    """The share of short runs that makes the agent's mean score the boundary's, from 200
    sampled runs of each (None: outside 10%-90%, this pair of shapes cannot straddle it).
    With a short run's score sum `a` over `c` calls and a long run's `b` over `d`, the mean
    at share q is (q a + (1-q) b) / (q c + (1-q) d)."""
    a, c = _score_sum(rng, short, 200)
    b, d = _score_sum(rng, long, 200)
    m = BOUNDARY_SCORE
    share = (b - m * d) / (m * (c - d) - a + b)
    return share if 0.1 <= share <= 0.9 else None


def _score_sum(rng: random.Random, profile: Profile, runs: int) -> tuple[float, float]:
    """The mean score sum and the mean number of LLM calls of a run of `profile`."""
    config = LearnerConfig()
    total = calls = 0.0
    for _ in range(runs):
        run = parse_run(orjson.dumps(make_run(rng, profile, START_NS)))
        scores = [obs[SCORE] for obs in observe_run(run, config)]
        total += sum(scores)
        calls += len(scores)
    return total / runs, calls / runs


SCENARIOS: dict[str, Callable[[int], list[dict[str, Any]]]] = {
    "stationary": stationary,
    "drift": drift,
    "drift_every": drift_every,
    "cold_start": cold_start,
    "boundary": boundary,
}


def write(out: Path, seed: int) -> Iterator[tuple[str, Path, int]]:
    """Write every scenario as `NAME.runs.jsonl` under `out`; yields (name, path, runs)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, make in SCENARIOS.items():
        runs = make(seed)
        path = out / f"{name}.runs.jsonl"
        path.write_bytes(b"".join(orjson.dumps(run) + b"\n" for run in runs))
        yield name, path, len(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scenarios", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args(argv)
    for name, path, count in write(args.out, args.seed):
        print(f"{name}: {count:,} runs -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
