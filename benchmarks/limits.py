"""Our worker next to its limits, side by side on one topic (issue 14's table).

One topic of the bench workload (20,000 runs, 6-10 LLM calls, 100 agents, 8 partitions) is
read, each round, by:

- an aiokafka consumer decoding each record with orjson (the client's ceiling);
- the same plus `parse_run` (our decode);
- the same plus learning (`Fleet.learn`: limits, dedupe, fold): our work per run, no output;
- a bare faust agent iterating its stream, with our consumer tuning and with faust's stock one
  (`benchmarks/bare_faust.py`): the runtime's cost;
- our worker (`python -m worker run`): everything, outputs included.

The process under test is pinned to a CPU of its own (the broker and this process to the
other). Each figure is the median of `--rounds` rounds, with the range; CPU per run is that
process's CPU time over the same stretch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmarks import pinning
from benchmarks.harness import (
    add_common_arguments,
    cpu_seconds,
    make_runs,
    new_topics,
    nonce,
    produce_all,
    run_bench,
    worker_checkout,
)
from devtools.worker_process import REPO_ROOT, TopicNames, WorkerProcess, parse_metrics
from worker.demo_workload import FLEET_ZIPF
from worker.kafka.reading import new_reader, topic_partitions
from worker.learner import Fleet
from worker.models import parse_run

TARGET_RUNS_PER_S = 6000
TARGET_CPU_US = 150
#: issue 23: a fleet's shape (10,000 agents, Zipf-skewed) per worker process
TARGET_FLEET_RUNS_PER_S = 5000
TARGET_FLEET_CPU_US = 200


@dataclass
class Figures:
    """Rounds of one contender: runs/s and CPU us per run."""

    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, records: int, seconds: float, cpu: float) -> None:
        self.rates.append(records / max(seconds, 1e-9))
        self.cpu_us.append(cpu / records * 1e6)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def cell(self) -> str:
        lo, hi = min(self.rates), max(self.rates)
        return f"{self.rate:>8,.0f} ({lo:,.0f}-{hi:,.0f})"

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_us)


async def consume(
    bootstrap: str, topic: str, count: int, work: Callable[[bytes], Any]
) -> tuple[float, float]:
    """Read `count` records of `topic` from the start, `work` on each value; returns
    (seconds, CPU seconds) from the first record to the last."""
    kafka = {"bootstrap_servers": bootstrap}
    partitions = await topic_partitions(kafka, topic)
    consumer = new_reader(kafka, max_partition_fetch_bytes=4 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        began = cpu0 = 0.0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for record in records:
                    if seen == 0:
                        began, cpu0 = time.monotonic(), time.process_time()
                    work(record.value)
                    seen += 1
        return time.monotonic() - began, time.process_time() - cpu0
    finally:
        await consumer.stop()


def bare_faust(bootstrap: str, topic: str, count: int, tuned: bool, cpus: set[int] | None) -> dict:
    command = [
        sys.executable, "-m", "benchmarks.bare_faust", "--bootstrap-servers", bootstrap,
        "--topic", topic, "--count", str(count), "--group", f"bf-{nonce()}",
    ]  # fmt: skip
    if tuned:
        command.append("--tuned")

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, preexec_fn=pin
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"bare faust agent failed:\n{done.stderr[-2000:]}")
    result: dict = json.loads(lines[-1])
    return result


async def our_worker(
    bootstrap: str,
    topics: TopicNames,
    count: int,
    workdir: Path,
    cpus: set[int] | None,
    checkout: dict[str, Any],
) -> tuple[float, float]:
    """A fresh worker (new group and state) through the backlog: (seconds, CPU seconds)
    from its first learned run to its last; `checkout` runs another checkout's worker."""
    tag = nonce()
    worker = WorkerProcess(
        bootstrap,
        topics,
        group_id=f"lim-{tag}",
        state_dir=workdir / tag,
        base_env={},
        cpus=cpus,
        **checkout,
    )
    worker.start()
    try:
        first: tuple[float, float] | None = None
        while True:
            worker.check_alive()
            text = await asyncio.to_thread(worker.get, "/metrics")
            learned = parse_metrics(text).get("agent_hints_runs_learned_total", 0) if text else 0
            assert worker.proc is not None
            now, cpu = time.monotonic(), cpu_seconds(worker.proc.pid)
            if learned and first is None:
                first = (now, cpu)
            if learned >= count and first is not None:
                return now - first[0], cpu - first[1]
            await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(worker.close)


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    topics = await new_topics(bootstrap, f"lim-{nonce()}", args.partitions)
    runs = make_runs(args.runs, args.agents, args.seed, "lim-", args.zipf)
    await produce_all(bootstrap, topics.runs, runs)
    count = len(runs)
    fleet_topics = await new_topics(bootstrap, f"limf-{nonce()}", args.partitions)
    fleet_runs = make_runs(args.fleet_runs, args.fleet_agents, args.seed, "limf-", FLEET_ZIPF)
    await produce_all(bootstrap, fleet_topics.runs, fleet_runs)
    plan = pinning.plan() if args.pin else None
    own = plan.worker if plan else None
    table: dict[str, Figures] = {
        "aiokafka consumer, orjson.loads per record": Figures(),
        "aiokafka + parse_run": Figures(),
        "aiokafka + parse_run + learn (no output)": Figures(),
        "bare faust agent, our consumer tuning": Figures(),
        "bare faust agent, stock settings": Figures(),
        "our worker (python -m worker run)": Figures(),
    }
    fleet_row = f"our worker, {args.fleet_agents:,} agents (Zipf), {len(fleet_runs):,} runs"
    table[fleet_row] = Figures()
    # (checkout, its row on the bench topic, its row on the fleet topic): ours, and the
    # worker of another checkout in the same rounds when asked
    workers: list[tuple[dict[str, Any], Figures, Figures]] = [
        ({}, table["our worker (python -m worker run)"], table[fleet_row])
    ]
    if args.worker_repo is not None:
        other = f"worker of {args.worker_repo}"
        table[other] = other_bench = Figures()
        table[f"{other}, {args.fleet_agents:,} agents"] = other_fleet = Figures()
        workers.append((worker_checkout(args.worker_repo), other_bench, other_fleet))
    names = list(table)
    with contextlib.ExitStack() as stack:
        if plan is not None:
            stack.enter_context(pinning.pinned_broker(bootstrap, plan.others))
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds} ...", flush=True)
            for name, work in zip(names[:3], _in_process_work(), strict=True):
                if plan is not None:
                    os.sched_setaffinity(0, plan.worker)
                seconds, cpu = await consume(bootstrap, topics.runs, count, work())
                if plan is not None:
                    os.sched_setaffinity(0, plan.others)
                table[name].add(count, seconds, cpu)
            for name, tuned in ((names[3], True), (names[4], False)):
                result = await asyncio.to_thread(
                    bare_faust, bootstrap, topics.runs, count, tuned, own
                )
                table[name].add(result["records"], result["seconds"], result["cpu_seconds"])
                table[name].notes.append(
                    f"{result['stalls']} stalls {result['stalled_seconds']:.1f}s"
                )
            for checkout, bench_row, fleet_bench_row in workers:
                seconds, cpu = await our_worker(bootstrap, topics, count, workdir, own, checkout)
                bench_row.add(count, seconds, cpu)
                fleet_count = len(fleet_runs)
                seconds, cpu = await our_worker(
                    bootstrap, fleet_topics, fleet_count, workdir, own, checkout
                )
                fleet_bench_row.add(fleet_count, seconds, cpu)
    return report(table, args, plan.describe() if plan else "CPUs not pinned")


def _in_process_work() -> list[Callable[[], Callable[[bytes], Any]]]:
    """Per record work of the three in-process contenders (fresh state each round)."""

    def learn() -> Callable[[bytes], Any]:
        fleet = Fleet()
        return lambda value: fleet.learn(parse_run(value))

    return [lambda: orjson.loads, lambda: parse_run, learn]


def report(table: dict[str, Figures], args: argparse.Namespace, pinned: str) -> list[str]:
    limit = table["aiokafka + parse_run + learn (no output)"].rate
    ours = table["our worker (python -m worker run)"]
    fleet = next(figures for name, figures in table.items() if name.startswith("our worker, "))
    lines = [
        f"side by side, {args.runs:,} runs x {args.rounds} rounds, {pinned}",
        f"{'what':<46} {'runs/s median (range)':>26} {'CPU us/run':>11} {'x limit':>8}",
    ]
    for name, figures in table.items():
        note = f"  [{', '.join(figures.notes)}]" if figures.notes else ""
        lines.append(
            f"{name:<46} {figures.cell():>26} {figures.cpu:>11,.0f} "
            f"{figures.rate / limit:>8.2f}{note}"
        )
    met_rate = ours.rate >= TARGET_RUNS_PER_S
    met_cpu = ours.cpu <= TARGET_CPU_US
    lines.append(
        f"targets: >= {TARGET_RUNS_PER_S:,} runs/s per worker: "
        f"{'met' if met_rate else 'NOT met'} ({ours.rate:,.0f}); CPU <= {TARGET_CPU_US} us/run: "
        f"{'met' if met_cpu else 'NOT met'} ({ours.cpu:,.0f})"
    )
    lines.append(
        f"targets at {args.fleet_agents:,} agents: >= {TARGET_FLEET_RUNS_PER_S:,} runs/s: "
        f"{'met' if fleet.rate >= TARGET_FLEET_RUNS_PER_S else 'NOT met'} ({fleet.rate:,.0f}); "
        f"CPU <= {TARGET_FLEET_CPU_US} us/run: "
        f"{'met' if fleet.cpu <= TARGET_FLEET_CPU_US else 'NOT met'} ({fleet.cpu:,.0f})"
    )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limits", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--fleet-agents", type=int, default=10_000, help="the fleet row's agents")
    parser.add_argument("--fleet-runs", type=int, default=40_000, help="the fleet row's backlog")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_bench("bench-limits", parse_args(argv), bench)


if __name__ == "__main__":
    sys.exit(main())
