"""Decoding run records: the pydantic reference against the msgspec fast path, side by side.

`python -m benchmarks.decode`: the bench workload's runs (generated, 6-10 LLM calls each) are
encoded to JSON once, then each decoder takes them all, alternating for several rounds so
that both see the same machine. Figures are CPU microseconds per run (process time, so
other processes' load counts less than in wall time), median (range), and the ratio of
the medians. Pin it for steadier figures: `taskset -c 1 python -m benchmarks.decode`.

- kept: every run decoded is kept (the learner benchmark's "parse" line): the garbage
  collector then walks everything decoded so far, which pydantic models make it do often.
- dropped: each run is let go once decoded, as the worker does.
- + learn: decode and fold into a fresh fleet of agent states (the worker's path).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from worker.demo_workload import generate_runs
from worker.learner import Fleet, LearnerConfig
from worker.models.fast_runs import decode_run_fast, parse_run
from worker.models.runs import parse_run_validated

Decoder = Callable[[bytes], Any]


def _cpu_us_per_run(lines: list[bytes], action: Callable[[Iterable[bytes]], None]) -> float:
    gc.collect()
    began = time.process_time()
    action(lines)
    return (time.process_time() - began) / len(lines) * 1e6


def _kept(decode: Decoder) -> Callable[[Iterable[bytes]], None]:
    def action(lines: Iterable[bytes]) -> None:
        kept = [decode(line) for line in lines]
        del kept

    return action


def _dropped(decode: Decoder) -> Callable[[Iterable[bytes]], None]:
    def action(lines: Iterable[bytes]) -> None:
        for line in lines:
            decode(line)

    return action


def _learned(decode: Decoder, config: LearnerConfig) -> Callable[[Iterable[bytes]], None]:
    def action(lines: Iterable[bytes]) -> None:
        fleet = Fleet(config)
        for line in lines:
            fleet.learn(decode(line))

    return action


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


def bench_decode(runs: int, agents: int, rounds: int) -> None:
    lines = [orjson.dumps(r) for r in generate_runs(runs, agents, seed=42)]
    taken = sum(decode_run_fast(line) is not None for line in lines)
    print(
        f"decode: {runs:,} runs, {agents} agents, {rounds} rounds alternating, CPU us per run,"
        f" median (range); the fast path took {taken:,} of {runs:,}"
    )
    config = LearnerConfig()
    scenarios = [
        ("kept", _kept),
        ("dropped", _dropped),
        ("+ learn", lambda decode: _learned(decode, config)),
    ]
    print(f"  {'':<10} {'pydantic':>22} {'fast (parse_run)':>22} {'ratio':>7}")
    for label, make in scenarios:
        reference: list[float] = []
        fast: list[float] = []
        for _ in range(rounds):
            reference.append(_cpu_us_per_run(lines, make(parse_run_validated)))
            fast.append(_cpu_us_per_run(lines, make(parse_run)))
        ratio = statistics.median(reference) / statistics.median(fast)
        print(f"  {label:<10} {_summary(reference):>22} {_summary(fast):>22} {ratio:>6.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode", description=__doc__)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    bench_decode(args.runs, args.agents, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
