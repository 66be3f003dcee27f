"""Generated agent runs, for benchmarks, demos and tests: realistic, seeded, reproducible.

Each agent has a fixed profile (its call names and token sizes), so what the learner
learns for it converges; runs mix sequential LLM calls, parallel fan-outs and tool calls.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from worker.models.timestamps import NS_PER_MS, format_timestamp_ns

CALL_NAMES = ("planner-llm", "gpt-4o", "llama-3.1-70b", "critic", "writer", "openai/gpt-4o-mini")
TOOL_NAMES = ("search", "retriever", "sql", "browser", "calculator")


def agent_id(index: int) -> str:
    return f"agent-{index:04d}"


def _profile(rng: random.Random) -> dict[str, Any]:
    names = rng.sample(CALL_NAMES, rng.randint(2, 4))
    return {
        "names": names,
        "tokens": {name: rng.choice((64, 256, 512, 1500, 3000)) for name in names},
        "fanout": rng.random() * 0.4,
    }


#: the skew of a realistic fleet: 40,000 runs over 10,000 agents reach ~8,600 of them, the
#: busiest with ~800 runs (issue 23's measured shape)
FLEET_ZIPF = 0.73


def generate_runs(
    count: int,
    agents: int,
    *,
    seed: int = 0,
    llm_calls: tuple[int, int] = (6, 10),
    start_ns: int | None = None,
    zipf: float = 0.0,
    every_agent: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield `count` JSON-ready RunRecord dicts spread over `agents` agents: uniformly, or
    with `zipf` > 0 the k-th agent gets runs in proportion to k ** -zipf (a few busy agents,
    a long tail of quiet ones). With `every_agent`, the first `agents` runs go to each agent
    once, in a seeded random order (a fleet in which every agent is known)."""
    rng = random.Random(seed)
    profiles = [_profile(random.Random(seed * 7919 + i)) for i in range(agents)]
    clock = start_ns if start_ns is not None else time.time_ns()
    weights = list(accumulate((k + 1) ** -zipf for k in range(agents))) if zipf > 0 else None
    population = range(agents)
    first = list(population) if every_agent else []
    random.Random(seed + 1).shuffle(first)
    for number in range(count):
        if number < len(first):
            index = first[number]
        elif weights is None:
            index = rng.randrange(agents)
        else:
            index = rng.choices(population, cum_weights=weights)[0]
        clock += rng.randint(1, 50) * NS_PER_MS
        yield _run(rng, agent_id(index), profiles[index], clock, rng.randint(*llm_calls))


def _run(
    rng: random.Random, agent: str, profile: dict[str, Any], start: int, llm_calls: int
) -> dict[str, Any]:
    calls: list[dict[str, Any]] = []
    cursor = start
    made = 0
    while made < llm_calls:
        if rng.random() < 0.2:  # a tool call between LLM steps
            end = cursor + rng.randint(20, 800) * NS_PER_MS
            calls.append(call_record("tool", rng.choice(TOOL_NAMES), cursor, end))
            cursor = end + rng.randint(1, 30) * NS_PER_MS
        width = 1
        if rng.random() < profile["fanout"]:
            width = min(rng.randint(2, 3), llm_calls - made)
        group_end = cursor
        for _ in range(width):
            name = rng.choice(profile["names"])
            begin = cursor + rng.randint(0, 40) * NS_PER_MS
            end = begin + rng.randint(150, 3000) * NS_PER_MS
            tokens = max(1, int(rng.gauss(profile["tokens"][name], profile["tokens"][name] / 5)))
            calls.append(call_record("llm", name, begin, end, tokens))
            group_end = max(group_end, end)
            made += 1
        cursor = group_end + rng.randint(5, 900) * NS_PER_MS
    return run_record(rng, agent, start, cursor, calls)


def run_record(
    rng: random.Random, agent: str, start: int, end: int, calls: list[dict[str, Any]]
) -> dict[str, Any]:
    """A RunRecord (SPEC 2) of generated calls, its id drawn from `rng`."""
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "agent_id": agent,
        "started_at": format_timestamp_ns(start),
        "ended_at": format_timestamp_ns(end),
        "calls": calls,
    }


def call_record(
    kind: str, name: str, begin: int, end: int, tokens: int | None = None, model: str | None = None
) -> dict[str, Any]:
    """A CallRecord (SPEC 2); an LLM call's prompt is three times its output."""
    call: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "started_at": format_timestamp_ns(begin),
        "ended_at": format_timestamp_ns(end),
    }
    if tokens is not None:
        call["output_tokens"] = tokens
        call["prompt_tokens"] = tokens * 3
    if model is not None:
        call["model_name"] = model
    return call
