"""Backlog throughput of one worker by input mix: clean, 1:1 bad/good, and unkeyed.

Cheap bad input must not throttle the good (dead letters are not sent one round trip at a
time), and producers that do not key by agent id with murmur2 (librdkafka's default) must
not cost more than half the throughput (rekeyed runs likewise). Each mix gets fresh topics
and a fresh worker (pinned to a CPU of its own, as in `benchmarks.e2e`); the rate is good
runs learned per second from the first learned run to the last. The mixes take turns for
`--rounds` rounds (a shared machine's noise hits each alike) and each reports its median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer

from benchmarks import pinning
from benchmarks.harness import (
    add_common_arguments,
    make_runs,
    new_topics,
    nonce,
    run_bench,
    worker_checkout,
)
from devtools.worker_process import WorkerProcess, parse_metrics

LEARNED = "agent_hints_runs_learned_total"
TARGET_RATIO = 0.5


def records_for(
    mix: str, runs: list[tuple[str, bytes]], seed: int
) -> list[tuple[bytes | None, bytes]]:
    """(key, value) pairs: keyed runs; each followed by an invalid one; or without keys."""
    if mix == "clean":
        return [(agent.encode(), value) for agent, value in runs]
    if mix == "bad 1:1":
        rng = random.Random(seed)
        out: list[tuple[bytes | None, bytes]] = []
        for agent, value in runs:
            out.append((agent.encode(), value))
            out.append((agent.encode(), b'{"id": "not a run", "n": %d' % rng.randrange(1 << 30)))
        return out
    return [(None, value) for _, value in runs]  # unkeyed: partitions spread at random


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        rng = random.Random(1)
        partitions = sorted(await producer.partitions_for(topic))
        futures = []
        for key, value in records:
            partition = rng.choice(partitions) if key is None else None
            futures.append(await producer.send(topic, value, key=key, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def learned(worker: WorkerProcess) -> float:
    text = worker.get("/metrics")
    return parse_metrics(text).get(LEARNED, 0.0) if text else 0.0


async def rate(args: argparse.Namespace, bootstrap: str, workdir: Path, mix: str) -> float:
    """Good runs per second through a backlog of this mix."""
    tag = nonce()
    topics = await new_topics(bootstrap, f"mix-{tag}", args.partitions)
    runs = make_runs(args.runs, args.agents, args.seed, f"m{tag[:5]}-", args.zipf)
    await produce(bootstrap, topics.runs, records_for(mix, runs, args.seed))
    cpus = pinning.plan() if args.pin else None
    worker = WorkerProcess(
        bootstrap,
        topics,
        group_id=f"mix-{tag}",
        state_dir=workdir / tag,
        base_env={},
        cpus=cpus.worker if cpus else None,
        **worker_checkout(args.worker_repo),
    )
    try:
        worker.start()
        first = last = None
        deadline = time.monotonic() + 60 + args.runs / 100
        while time.monotonic() < deadline:
            worker.check_alive()
            done = await asyncio.to_thread(learned, worker)
            now = time.monotonic()
            if done and first is None:
                first = (now, done)
            if done >= len(runs):
                last = (now, done)
                break
            await asyncio.sleep(0.1)
        if first is None or last is None:
            raise RuntimeError(f"{mix}: not every run was learned in time")
        return (last[1] - first[1]) / max(last[0] - first[0], 1e-9)
    finally:
        await asyncio.to_thread(worker.close)


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    cpus = pinning.plan() if args.pin else None
    rates: dict[str, list[float]] = {mix: [] for mix in ("clean", "bad 1:1", "unkeyed")}
    with contextlib.ExitStack() as stack:
        if cpus is not None:
            os.sched_setaffinity(0, cpus.others)
            stack.enter_context(pinning.pinned_broker(bootstrap, cpus.others))
        for round_ in range(1, args.rounds + 1):
            for mix, values in rates.items():
                print(f"round {round_}: mix {mix} ({args.runs:,} good runs) ...", flush=True)
                values.append(await rate(args, bootstrap, workdir, mix))
    clean = statistics.median(rates["clean"])
    lines = [
        f"input mixes, {args.runs:,} good runs over {args.agents} agents, one worker, "
        f"median of {args.rounds} rounds (range):"
    ]
    for mix, values in rates.items():
        value = statistics.median(values)
        ratio = value / clean
        spread = f"({min(values):,.0f}-{max(values):,.0f})"
        line = f"  {mix:<8} {value:>8,.0f} {spread:<15} good runs/s  ({ratio:.0%} of clean)"
        if mix != "clean":
            met = "met" if ratio >= TARGET_RATIO else "NOT met"
            line += f"  target >= {TARGET_RATIO:.0%} of clean: {met}"
        lines.append(line)
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mixes", description=__doc__)
    add_common_arguments(parser)
    # long enough that every mix spans several commit intervals (tries and state writes):
    # a clean backlog of 10,000 runs was done before the first, which flattered it
    parser.add_argument("--runs", type=int, default=40_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_bench("bench-mixes", parse_args(argv), bench)


if __name__ == "__main__":
    sys.exit(main())
