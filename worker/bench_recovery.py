"""Recovery and exactly-once figures of ONE worker process against a local Kafka broker.

1. Rebuild: `--agents` agents (default 10,000) learn `--runs-per-agent` runs each; the
   worker stops (SIGTERM), its RocksDB directory is deleted, and it starts again. Reported:
   seconds from the new process's start to `/readyz` 200 (state rebuilt from the changelog),
   next to a restart with the directory intact. Then every run is sent again: all must be
   found already learned (duplicates), which proves the rebuilt state is complete.
2. Throughput: a backlog of `--runs` runs over `--tp-agents` agents is worked through once with
   `processing_guarantee = at_least_once` and once with `exactly_once` (fresh topics and
   group each); runs/s from the first to the last learned run (`agent_hints_runs_learned_total`).

Run: `python -m worker.bench_recovery [--quick] [--bootstrap-servers HOST:PORT]`. Without a
bootstrap it starts the broker with `scripts/kafka.sh up` (stopped at the end if it started it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from worker.bench_e2e import Worker, make_runs, run_bench
from worker.demo import ensure_topics, topic_specs
from worker.workload import generate_runs


def metric(worker: Worker, name: str) -> float:
    text = worker.get("/metrics") or ""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def produce(bootstrap: str, topic: str, runs: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=agent.encode()) for agent, value in runs]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_metric(worker: Worker, name: str, target: float, timeout: float) -> float:
    """Wait until metric `name` reaches `target`; returns the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while True:
        worker.check_alive()
        if await asyncio.to_thread(metric, worker, name) >= target:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not reach {target} in {timeout:.0f}s")
        await asyncio.sleep(0.2)


async def timed_ready(worker: Worker) -> float:
    began = time.monotonic()
    worker.start()
    await worker.wait_ready(600)
    return time.monotonic() - began


def new_topics(partitions: int) -> dict[str, str]:
    nonce = uuid.uuid4().hex[:10]
    return {
        "runs": f"brec-{nonce}.agent-runs",
        "hints": f"brec-{nonce}.agent-hints",
        "tries": f"brec-{nonce}.agent-tries",
        "dlq": f"brec-{nonce}.agent-runs.dlq",
    }


async def rebuild(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    topics = new_topics(args.partitions)
    await ensure_topics(
        bootstrap, topic_specs(topics["runs"], topics["hints"], topics["tries"], args.partitions)
    )
    # every agent gets exactly runs_per_agent runs (round robin over generated runs)
    runs: list[tuple[str, bytes]] = []
    for i, run in enumerate(
        generate_runs(args.agents * args.runs_per_agent, 1, seed=args.seed, llm_calls=(4, 8))
    ):
        run["agent_id"] = f"r-agent-{i % args.agents:05d}"
        runs.append((run["agent_id"], orjson.dumps(run)))
    agents = len({agent for agent, _ in runs})
    await produce(bootstrap, topics["runs"], runs)
    worker = Worker(bootstrap, topics, workdir / "rebuild")
    worker.workdir.mkdir(parents=True, exist_ok=True)
    try:
        await timed_ready(worker)
        t0 = time.monotonic()
        await wait_metric(worker, "agent_hints_runs_learned_total", len(runs), 1200)
        learn_s = time.monotonic() - t0
        await asyncio.sleep(3)  # a commit interval or two: every state in the changelog
        worker.stop()
        warm = await timed_ready(worker)
        worker.stop()
        shutil.rmtree(worker.workdir / "state")
        cold = await timed_ready(worker)
        # the rebuilt state must know every run: send them all again
        await produce(bootstrap, topics["runs"], runs)
        await wait_metric(worker, "agent_hints_runs_duplicate_total", len(runs), 1200)
        learned_again = metric(worker, "agent_hints_runs_learned_total")
    finally:
        await asyncio.to_thread(worker.stop)
    state_mb = (
        sum(p.stat().st_size for p in (worker.workdir / "state").rglob("*") if p.is_file()) / 1e6
    )
    return [
        f"rebuild: {agents:,} agents x {args.runs_per_agent} runs ({len(runs):,} runs, learned "
        f"in {learn_s:.1f} s); state dir {state_mb:.1f} MB",
        f"  restart, state dir intact:          ready in {warm:.1f} s",
        f"  restart, state dir deleted:         ready in {cold:.1f} s (rebuilt from changelog)",
        f"  all {len(runs):,} runs sent again after the rebuild: {int(learned_again)} learned "
        "(0 = the rebuilt state had every run)",
    ]


async def throughput(
    args: argparse.Namespace, bootstrap: str, workdir: Path, guarantee: str
) -> tuple[float, float]:
    topics = new_topics(args.partitions)
    await ensure_topics(
        bootstrap, topic_specs(topics["runs"], topics["hints"], topics["tries"], args.partitions)
    )
    runs = make_runs(args.runs, args.tp_agents, args.seed + 1, f"t{guarantee[:2]}-")
    await produce(bootstrap, topics["runs"], runs)
    os.environ["WORKER_PROCESSING_GUARANTEE"] = guarantee
    worker = Worker(bootstrap, topics, workdir / guarantee)
    worker.workdir.mkdir(parents=True, exist_ok=True)
    try:
        await timed_ready(worker)
        first = await wait_metric(worker, "agent_hints_runs_learned_total", 1, 600)
        last = await wait_metric(worker, "agent_hints_runs_learned_total", len(runs), 1800)
    finally:
        os.environ.pop("WORKER_PROCESSING_GUARANTEE", None)
        await asyncio.to_thread(worker.stop)
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
    parser = argparse.ArgumentParser(prog="python -m worker.bench_recovery", description=__doc__)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("WORKER_BOOTSTRAP_SERVERS"))
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--runs-per-agent", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20_000, help="throughput backlog")
    parser.add_argument("--tp-agents", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=8)
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
