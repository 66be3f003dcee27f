"""The fleet curve: one worker's throughput, CPU per run and memory as the fleet grows, and
what a second worker in the group adds (issue 23).

Each point is a fresh worker, pinned to a CPU of its own, through a backlog produced before
it starts: `4 x agents` runs (at least 20,000) of the bench workload's shape, every agent
known (each agent's first run comes first, in a seeded order), then Zipf-skewed
(`FLEET_ZIPF`: a few busy agents, a long tail of quiet ones). Sustained runs/s over the
10%..90% stretch of the runs showing in `agent-hints`; the worker's CPU over the same
stretch; its RSS once every run is reflected. Then two workers in one group, one CPU each,
against one alone on the same 10,000-agent backlog.

Run: `python -m benchmarks fleet [--agents-list 100,1000,10000,100000] [--plot PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import pinning
from benchmarks.e2e import saturation, stop_worker
from benchmarks.harness import (
    add_common_arguments,
    make_runs,
    new_topics,
    nonce,
    run_bench,
    worker_checkout,
)
from devtools.worker_process import REPO_ROOT, WorkerProcess
from worker.demo_workload import FLEET_ZIPF

#: issue 23's targets
TARGET_RUNS_PER_S_10K = 5000
TARGET_CPU_US_10K = 200
TARGET_RUNS_PER_S_100 = 6000
TARGET_RSS_100K = 1 << 30
TARGET_SCALE_OUT = 1.7
DEFAULT_PLOT = REPO_ROOT / "docs" / "fleet-curve.png"


@dataclass
class Point:
    """One fleet size on one checkout: distinct agents, runs/s, the workers' CPU us per run
    (all of them), the first worker's RSS bytes."""

    label: str
    agents: int
    runs: int
    rate: float
    cpu_us: float
    rss: int
    complete: bool
    broker_cpu_us: float = 0.0


def rss_of(pid: int) -> int:
    """Resident set size of process `pid`, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def run_point(
    args: argparse.Namespace,
    bootstrap: str,
    workdir: Path,
    agents: int,
    cpus: list[set[int]] | None,
    checkout: tuple[str, Path | None] = ("this tree", None),
    group_first: bool = False,
) -> Point:
    """A fresh group of `len(cpus)` workers (one if unpinned) of `checkout` (label, repo;
    None: this one) through one fleet's backlog (`group_first`: see `saturation`)."""
    tag = nonce()
    topics = await new_topics(bootstrap, f"fleet-{tag}", args.partitions)
    count = max(20_000, 4 * agents)
    runs = make_runs(count, agents, args.seed, f"f{tag[:5]}-", FLEET_ZIPF, every_agent=True)
    workers = [
        WorkerProcess(
            bootstrap,
            topics,
            group_id=f"fleet-{tag}",
            state_dir=workdir / f"{tag}-{i}",
            base_env={},
            cpus=pinned,
            **worker_checkout(checkout[1]),
        )
        for i, pinned in enumerate(cpus or [None])
    ]
    try:
        broker = pinning.broker_pid(bootstrap) or 0
        sat, watcher = await saturation(runs, bootstrap, topics, workers, broker, group_first)
        await watcher.stop()
        proc = workers[0].proc
        rss = rss_of(proc.pid) if proc is not None else 0
    finally:
        for worker in workers:
            await asyncio.to_thread(stop_worker, worker)

    def per_run(key: str) -> float:
        return sat.cpu[key] / sat.mid_rate * 1e6 if sat.cpu and sat.mid_rate else 0.0

    return Point(
        checkout[0],
        sat.agents,
        sat.runs,
        sat.mid_rate,
        per_run("workers_cores"),
        rss,
        sat.complete,
        per_run("broker_cores"),
    )


def checkout_label(repo: Path) -> str:
    """A checkout by its commit (`git rev-parse --short HEAD`), else by its path."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return str(repo)
    return done.stdout.strip() or str(repo)


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    plan = pinning.plan() if args.pin else None
    checkouts: list[tuple[str, Path | None]] = [("this tree", args.worker_repo)]
    if args.compare is not None:
        checkouts.append((checkout_label(args.compare), args.compare))
    lines = [
        f"fleet curve: one worker, {plan.describe() if plan else 'CPUs not pinned'}; "
        f"backlog 4 x agents runs (>= 20,000), every agent known, Zipf {FLEET_ZIPF}",
        f"{'checkout':<24} {'agents':>9} {'runs':>9} {'runs/s':>9} {'CPU us/run':>11} "
        f"{'RSS MiB':>9}",
    ]
    points: list[Point] = []
    with contextlib.ExitStack() as stack:
        if plan is not None:
            stack.enter_context(pinning.pinned_self(plan.others))
            stack.enter_context(pinning.pinned_broker(bootstrap, plan.others))
        for agents in args.agents_list:
            for checkout in checkouts:  # side by side: each size on each checkout in turn
                print(f"{agents:,} agents, {checkout[0]} ...", flush=True)
                pinned = [plan.worker] if plan else None
                point = await run_point(args, bootstrap, workdir, agents, pinned, checkout)
                points.append(point)
                lines.append(
                    f"{point.label[-24:]:<24} {point.agents:>9,} {point.runs:>9,} "
                    f"{point.rate:>9,.0f} {point.cpu_us:>11,.0f} {point.rss / 2**20:>9,.0f}"
                    + ("" if point.complete else "  INCOMPLETE")
                )
    if args.scale_out:
        lines += await scale_out(args, bootstrap, workdir)
    lines += targets([p for p in points if p.label == "this tree"])
    if args.plot:
        plot(points, args.plot)
        lines.append(f"plot: {args.plot}")
    return lines


async def scale_out(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    """One worker alone, then two in one group (one CPU each), on the same fleet's shape,
    each group settled before its backlog comes; the broker and this process float (there
    are only so many CPUs). The workers' CPU per run says what the second costs apart from
    the CPUs it competes for."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        return ["scale-out: needs two CPUs"]
    agents = args.scale_out_agents
    print(f"scale-out at {agents:,} agents: one worker, then two ...", flush=True)
    one = await run_point(args, bootstrap, workdir, agents, [{cpus[-1]}], group_first=True)
    two = await run_point(
        args, bootstrap, workdir, agents, [{cpus[-1]}, {cpus[-2]}], group_first=True
    )
    ratio = two.rate / one.rate if one.rate else 0.0
    met = "met" if ratio >= TARGET_SCALE_OUT else "NOT met"
    return [
        f"scale-out, {agents:,} agents, {one.runs:,} runs, one CPU per worker, broker and "
        f"bench unpinned: one worker {one.rate:,.0f} runs/s, two {two.rate:,.0f} runs/s "
        f"= {ratio:.2f}x (target >= {TARGET_SCALE_OUT}x: {met}); workers' CPU per run "
        f"{one.cpu_us:,.0f} us one, {two.cpu_us:,.0f} us two "
        f"({two.cpu_us / one.cpu_us if one.cpu_us else 0:.2f}x); the broker's "
        f"{one.broker_cpu_us:,.0f} us and {two.broker_cpu_us:,.0f} us"
    ]


def targets(points: list[Point]) -> list[str]:
    by_agents = {p.agents: p for p in points}
    lines = []
    for agents, label, check in (
        (10_000, f">= {TARGET_RUNS_PER_S_10K:,} runs/s", lambda p: p.rate >= TARGET_RUNS_PER_S_10K),
        (10_000, f"<= {TARGET_CPU_US_10K} us/run", lambda p: p.cpu_us <= TARGET_CPU_US_10K),
        (100, f">= {TARGET_RUNS_PER_S_100:,} runs/s", lambda p: p.rate >= TARGET_RUNS_PER_S_100),
        (100_000, "RSS <= 1 GiB", lambda p: p.rss <= TARGET_RSS_100K),
    ):
        point = by_agents.get(agents)
        if point is not None:
            lines.append(
                f"target at {agents:,} agents, {label}: {'met' if check(point) else 'NOT met'}"
            )
    return lines


def plot(points: list[Point], path: Path) -> None:
    """runs/s and CPU us per run (left), RSS (right) against the fleet size, a line per
    checkout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, cpu_ax, rss_ax) = plt.subplots(1, 3, figsize=(14, 4))
    for label in dict.fromkeys(p.label for p in points):
        mine = [p for p in points if p.label == label]
        agents = [p.agents for p in mine]
        rate_ax.plot(agents, [p.rate for p in mine], "o-", label=label)
        cpu_ax.plot(agents, [p.cpu_us for p in mine], "s-", label=label)
        rss_ax.plot(agents, [p.rss / 2**20 for p in mine], "o-", label=label)
    rss_ax.axhline(1024, color="grey", linestyle=":", label="1 GiB")
    for ax, title, unit in (
        (rate_ax, "throughput, one worker", "runs/s"),
        (cpu_ax, "worker CPU per run", "us"),
        (rss_ax, "worker memory", "RSS, MiB"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("agents in the fleet")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _agents_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--agents-list", type=_agents_list, default=[100, 1_000, 10_000, 100_000])
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--no-scale-out", dest="scale_out", action="store_false")
    parser.add_argument("--scale-out-agents", type=int, default=10_000)
    parser.add_argument(
        "--compare", type=Path, help="another checkout (with its .venv): each point on it too"
    )
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG to write ('' none)")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args: Any = parser.parse_args(argv)
    args.plot = Path(args.plot) if args.plot else None  # Path('') would be '.', not none
    return run_bench("bench-fleet", args, bench)


if __name__ == "__main__":
    sys.exit(main())
