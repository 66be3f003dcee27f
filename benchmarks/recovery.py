"""Recovery and exactly-once figures of ONE worker process against a local Kafka broker.

1. Rebuild: `--agents` agents (default 50,000) learn `--runs-per-agent` runs each; the
   worker stops (SIGTERM, timed: right after the backlog, and again when idle), its RocksDB
   directory is deleted, and it starts again. Reported:
   seconds from the new process's start to `/readyz` 200 (state rebuilt from the changelog),
   next to a restart with the directory intact. Then every run is sent again: all must be
   found already learned (duplicates), which proves the rebuilt state is complete.
2. Throughput: a backlog of `--runs` runs over `--tp-agents` agents is worked through once with
   `processing_guarantee = at_least_once` and once with `exactly_once` (fresh topics and
   group each); runs/s from the first to the last learned run (`agent_hints_runs_learned_total`).

Run: `python -m benchmarks.recovery [--quick] [--bootstrap-servers HOST:PORT]`. Without a
bootstrap it uses the broker of `make kafka-up`, or starts one of its own for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import (
    add_common_arguments,
    make_runs,
    new_topics,
    nonce,
    produce_all,
    run_bench,
)
from devtools.worker_process import WorkerProcess, parse_metrics
from worker.demo_workload import generate_runs

LEARNED = "agent_hints_runs_learned_total"
DUPLICATES = "agent_hints_runs_duplicate_total"


def metric(worker: WorkerProcess, name: str) -> float:
    """The metric's value, 0 while /metrics does not answer yet."""
    text = worker.get("/metrics")
    return parse_metrics(text).get(name, 0.0) if text else 0.0


async def wait_metric(worker: WorkerProcess, name: str, target: float, timeout: float) -> float:
    """Wait until metric `name` reaches `target`; returns the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while True:
        worker.check_alive()
        if await asyncio.to_thread(metric, worker, name) >= target:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not reach {target} in {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def timed_ready(worker: WorkerProcess) -> float:
    began = time.monotonic()
    worker.start()
    await asyncio.to_thread(worker.wait_ready, 600)
    return time.monotonic() - began


async def timed_stop(worker: WorkerProcess) -> float:
    """Seconds from SIGTERM to the process's clean exit."""
    began = time.monotonic()
    code = await asyncio.to_thread(worker.stop)
    if code != 0:
        raise RuntimeError(f"worker exited {code} on SIGTERM")
    return time.monotonic() - began


def bench_worker(bootstrap: str, topics: Any, workdir: Path, **env: str) -> WorkerProcess:
    """A worker with the product's default settings (plus `env`) on `topics`."""
    workdir.mkdir(parents=True, exist_ok=True)
    return WorkerProcess(
        bootstrap,
        topics,
        group_id=f"brec-{nonce()}",
        state_dir=workdir / "state",
        base_env={},
        env=dict(env),
    )


async def rebuild(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    topics = await new_topics(bootstrap, f"brec-{nonce()}", args.partitions)
    # every agent gets exactly runs_per_agent runs (round robin over generated runs)
    runs: list[tuple[str, bytes]] = []
    for i, run in enumerate(
        generate_runs(args.agents * args.runs_per_agent, 1, seed=args.seed, llm_calls=(4, 8))
    ):
        run["agent_id"] = f"r-agent-{i % args.agents:05d}"
        runs.append((run["agent_id"], orjson.dumps(run)))
    agents = len({agent for agent, _ in runs})
    await produce_all(bootstrap, topics.runs, runs)
    worker = bench_worker(bootstrap, topics, workdir / "rebuild")
    try:
        await timed_ready(worker)
        t0 = time.monotonic()
        await wait_metric(worker, LEARNED, len(runs), 1200)
        learn_s = time.monotonic() - t0
        # SIGTERM right after the backlog: every agent changed, its state and trie still owed
        stop_busy = await timed_stop(worker)
        warm = await timed_ready(worker)
        await asyncio.sleep(3)  # commits and publishing settled: what a routine stop costs
        stop_idle = await timed_stop(worker)
        shutil.rmtree(worker.state_dir)
        cold = await timed_ready(worker)
        # the rebuilt state must know every run: send them all again
        await produce_all(bootstrap, topics.runs, runs)
        await wait_metric(worker, DUPLICATES, len(runs), 1200)
        learned_again = metric(worker, LEARNED)
        state_mb = sum(p.stat().st_size for p in worker.state_dir.rglob("*") if p.is_file()) / 1e6
    finally:
        await asyncio.to_thread(worker.close)
    return [
        f"rebuild: {agents:,} agents x {args.runs_per_agent} runs ({len(runs):,} runs, learned "
        f"in {learn_s:.1f} s); state dir {state_mb:.1f} MB",
        f"  SIGTERM to exit, {agents:,} agents just learned: {stop_busy:.1f} s; "
        f"when idle: {stop_idle:.1f} s",
        f"  restart, state dir intact:          ready in {warm:.1f} s",
        f"  restart, state dir deleted:         ready in {cold:.1f} s (rebuilt from changelog)",
        f"  all {len(runs):,} runs sent again after the rebuild: {int(learned_again)} learned "
        "(0 = the rebuilt state had every run)",
    ]


async def throughput(
    args: argparse.Namespace, bootstrap: str, workdir: Path, guarantee: str
) -> tuple[float, float]:
    topics = await new_topics(bootstrap, f"brec-{nonce()}", args.partitions)
    runs = make_runs(args.runs, args.tp_agents, args.seed + 1, f"t{guarantee[:2]}-")
    await produce_all(bootstrap, topics.runs, runs)
    worker = bench_worker(
        bootstrap, topics, workdir / guarantee, WORKER_PROCESSING_GUARANTEE=guarantee
    )
    try:
        await timed_ready(worker)
        first = await wait_metric(worker, LEARNED, 1, 600)
        last = await wait_metric(worker, LEARNED, len(runs), 1800)
    finally:
        await asyncio.to_thread(worker.close)
    seconds = max(last - first, 1e-9)
    return len(runs) / seconds, seconds


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    lines: list[str] = []
    if not args.skip_rebuild:
        print("rebuild phase ...", flush=True)
        lines += await rebuild(args, bootstrap, workdir)
    if not args.skip_throughput:
        figures: dict[str, Any] = {}
        for guarantee in ("at_least_once", "exactly_once"):
            print(f"throughput phase ({guarantee}, {args.runs:,} runs) ...", flush=True)
            figures[guarantee] = await throughput(args, bootstrap, workdir, guarantee)
        alo, eos = figures["at_least_once"], figures["exactly_once"]
        lines += [
            f"throughput, backlog of {args.runs:,} runs over {args.tp_agents} agents:",
            f"  at_least_once: {alo[0]:,.0f} runs/s ({alo[1]:.1f} s)",
            f"  exactly_once:  {eos[0]:,.0f} runs/s ({eos[1]:.1f} s), "
            f"{eos[0] / alo[0]:.0%} of at_least_once",
        ]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recovery", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--agents", type=int, default=50_000)
    parser.add_argument("--runs-per-agent", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20_000, help="throughput backlog")
    parser.add_argument("--tp-agents", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="small smoke variant")
    parser.add_argument("--skip-rebuild", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.runs = 500, 2_000
    return args


def main(argv: list[str] | None = None) -> int:
    return run_bench("bench-recovery", parse_args(argv), bench)


if __name__ == "__main__":
    sys.exit(main())
