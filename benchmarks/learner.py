"""The learner's throughput and state size, without Kafka.

Runs on one core: generated runs (6-10 LLM calls each) are encoded to JSON first, then
timed through parsing and learning, as the worker does per record.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from worker.demo_workload import generate_runs
from worker.learner import SEMANTICS, AgentState, Fleet, LearnerConfig, state_hints, trie_dict
from worker.models import parse_run


def _timed(label: str, count: int, unit: str, action: Callable[[], Any]) -> float:
    gc.collect()
    began = time.perf_counter()
    action()
    elapsed = time.perf_counter() - began
    print(f"  {label:<34} {count / elapsed:>12,.0f} {unit}/s   ({elapsed:.2f} s for {count:,})")
    return elapsed


def bench_learner(runs: int, agents: int, semantics: str) -> None:
    config = LearnerConfig(semantics=semantics)
    lines = [orjson.dumps(r) for r in generate_runs(runs, agents, seed=42)]
    llm_calls = sum(line.count(b'"kind":"llm"') for line in lines)
    print(
        f"learner ({semantics}): {runs:,} runs, {agents} agents, "
        f"{llm_calls / runs:.1f} LLM calls per run, one core"
    )
    records = []
    _timed("parse (JSON -> RunRecord)", runs, "runs", lambda: records.extend(map(parse_run, lines)))
    fleet = Fleet(config)
    states = fleet.states

    def learn() -> None:
        for record in records:
            fleet.learn(record)

    _timed("learn (fold into state)", runs, "runs", learn)

    def parse_and_learn() -> None:
        fresh = Fleet(config)
        for line in lines:
            fresh.learn(parse_run(line))

    _timed("parse + learn (the worker's path)", runs, "runs", parse_and_learn)

    def publish() -> None:
        for agent_id, state in states.items():
            state_hints(state, config)
            orjson.dumps(trie_dict(agent_id, state, config))

    _timed("trie + hints + JSON per agent", len(states), "agents", publish)

    def learn_and_publish(batch: int = 400) -> None:
        """The worker's loop at 2,000 runs/s with a 200 ms publish interval."""
        live = Fleet(config)
        for start in range(0, len(records), batch):
            changed = set()
            for record in records[start : start + batch]:
                live.learn(record)
                changed.add(record.agent_id)
            for agent_id in changed:
                state_hints(live.states[agent_id], config)
                orjson.dumps(trie_dict(agent_id, live.states[agent_id], config))

    _timed("learn + publish changed every 400", runs, "runs", learn_and_publish)
    blobs = [s.to_bytes() for s in states.values()]
    _timed("state to_bytes", len(blobs), "agents", lambda: [s.to_bytes() for s in states.values()])
    _timed(
        "state from_bytes", len(blobs), "agents", lambda: list(map(AgentState.from_bytes, blobs))
    )
    sizes = [len(b) for b in blobs]
    print(
        f"  state per agent: mean {statistics.fmean(sizes):,.0f} B, max {max(sizes):,} B "
        f"({runs // agents} runs per agent; run ids are kept per partition, 16 B each)"
    )


def compare_rule_sets(runs: int, agents: int, rounds: int) -> None:
    """Learning alone under each rule set, and under corrected without scoring (SPEC 10's
    cost), alternating round by round (so a busy machine slows them alike); CPU time of this
    process, medians, ratio to corrected."""
    records = [parse_run(orjson.dumps(r)) for r in generate_runs(runs, agents, seed=42)]
    configs = {semantics: LearnerConfig(semantics=semantics) for semantics in SEMANTICS}
    configs["unscored"] = LearnerConfig(semantics="corrected", evaluate=False)
    times: dict[str, list[float]] = {label: [] for label in configs}
    for _ in range(rounds):
        for label, config in configs.items():
            fleet = Fleet(config)
            gc.collect()
            began = time.process_time()
            for record in records:
                fleet.learn(record)
            times[label].append(time.process_time() - began)
    print(f"learn side by side: {runs:,} runs, {agents} agents, {rounds} rounds, CPU medians")
    print("  (unscored: corrected with evaluate off, learning without SPEC 10's scoring)")
    base = statistics.median(times["corrected"])
    for label, spent in times.items():
        median = statistics.median(spent)
        print(
            f"  {label:<12} {runs / median:>10,.0f} runs/s  {median / runs * 1e6:>7.1f} us/run"
            f"  {median / base:.2f}x corrected's time"
        )


def learn_only(runs: int, agents: int, semantics: str) -> None:
    """Parse the runs, then learn them once (`Fleet.learn`), timing only the learning."""
    records = [parse_run(orjson.dumps(r)) for r in generate_runs(runs, agents, seed=42)]
    fleet = Fleet(LearnerConfig(semantics=semantics))
    began = time.process_time()
    for record in records:
        fleet.learn(record)
    spent = time.process_time() - began
    print(f"learn ({semantics}): {runs:,} runs, {agents} agents, {spent / runs * 1e6:.1f} us/run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learner", description=__doc__)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="of the side-by-side learn")
    parser.add_argument(
        "--learn-only",
        choices=SEMANTICS,
        help="only learn the runs, once, under this rule set: for a profiler, e.g. "
        "valgrind --tool=callgrind --toggle-collect='CPyDef_intake___learn_scored'",
    )
    args = parser.parse_args(argv)
    if args.learn_only:
        learn_only(args.runs, args.agents, args.learn_only)
        return 0
    for semantics in SEMANTICS:
        bench_learner(args.runs, args.agents, semantics)
    compare_rule_sets(args.runs, args.agents, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
