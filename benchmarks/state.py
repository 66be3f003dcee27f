"""Memory per cached agent and changelog bytes per run (issue 10, problems 2 and 8).

1. RSS per cached agent, no Kafka: a subprocess learns `--agents` agents x 3 runs through the
   worker's processor and state cache (commits every 400 runs, each changed agent's hints and
   trie built as the publisher does; the table keeps nothing, RocksDB would keep it on
   disk), then reports its RSS growth / agents, and the cache's own estimate.
2. The same on a real worker: `--worker-agents` agents x 3 runs produced to a worker with the
   product's defaults; `process_resident_memory_bytes` growth / agents cached (RocksDB,
   publisher and all included).
3. Changelog bytes per run of a busy agent: one agent learns `--busy-runs` runs (a backlog),
   then gets runs at 10 runs/s and at 1 run/s, each for `--seconds`; the bytes (key + value)
   the worker wrote to its state changelog topic meanwhile, next to the input bytes.

Run: `python -m benchmarks.state [--quick] [--skip-worker] [--bootstrap-servers HOST:PORT]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import add_common_arguments, new_topics, nonce, produce_all, run_bench
from devtools.worker_process import WorkerProcess, parse_metrics, produce_paced, read_all
from worker.demo_workload import generate_runs

RSS = "process_resident_memory_bytes"
LEARNED = "agent_hints_runs_learned_total"


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


class _NoTable:
    """The state table without storage (RocksDB keeps the records on disk); every write
    counts as in the local store at once."""

    applied = True  # what `put` returns is its own receipt

    def get(self, key: bytes) -> bytes | None:
        return None

    def put(self, partition: int, key: bytes, value: bytes | None) -> _NoTable:
        return self


def measure_cache(agents: int, max_decoded: int | None = None) -> dict[str, float]:
    """In this process: RSS growth per agent once `agents` x 3 runs are learned."""
    from worker.learner import LearnerConfig, state_hints, trie_dict
    from worker.learner.limits import Limits
    from worker.stream.processor import Processor
    from worker.stream.publish_queue import PublishQueue
    from worker.stream.state.store import StateStore

    config = LearnerConfig()
    options = {} if max_decoded is None else {"max_decoded": max_decoded}
    store = StateStore(_NoTable(), max_bytes=1 << 40, **options)
    to_publish = PublishQueue(store.cache)
    processor = Processor(store, to_publish, config, Limits(), 1)
    runs = generate_runs(agents * 3, 1, seed=5, start_ns=1_700_000_000_000_000_000)
    for _ in range(50):  # warm the module-level memos with a throwaway agent
        processor.process(orjson.dumps(next(runs)), 0, event=None)
    store.write_all()
    to_publish.take()
    store.keep([])
    gc.collect()
    before = rss_bytes()
    began = time.perf_counter()
    for i, run in enumerate(runs, start=50):
        run["agent_id"] = f"agent-{(i - 50) % agents:06d}"
        processor.process(orjson.dumps(run), 0, event=None)
        if i % 400 == 0:
            store.write_all()
            for change in to_publish.take():
                state_hints(store.state(change.entry), config)
                trie_dict(change.agent_id, store.state(change.entry), config)
    store.write_all()
    to_publish.take()
    store.acknowledged()
    store.cache.fit()
    gc.collect()
    return {
        "agents": len(store),
        "rss_per_agent": (rss_bytes() - before) / len(store),
        "estimate_per_agent": store.state_bytes / len(store),
        "decoded": store.decoded_count,
        "runs_per_s": agents * 3 / (time.perf_counter() - began),
    }


def cache_phase(agents: int) -> list[str]:
    """measure_cache in a fresh subprocess (so that nothing else is in its heap)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.state", "--measure-cache", str(agents)],
        capture_output=True,
        text=True,
        check=True,
    )
    m = orjson.loads(out.stdout.strip().splitlines()[-1])
    return [
        f"state cache, {m['agents']:,} agents x 3 runs in a subprocess (no Kafka):",
        f"  RSS growth per cached agent:  {m['rss_per_agent']:,.0f} B "
        f"(the cache's estimate: {m['estimate_per_agent']:,.0f} B; {m['decoded']:,} decoded)",
        f"  learned at {m['runs_per_s']:,.0f} runs/s (parse, learn, commits, publish reads)",
    ]


def worker_metric(worker: WorkerProcess, name: str) -> float:
    text = worker.get("/metrics")
    return parse_metrics(text).get(name, 0.0) if text else 0.0


async def wait_learned(worker: WorkerProcess, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(worker_metric, worker, LEARNED) < target:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{LEARNED} did not reach {target} in {timeout:.0f}s")
        await asyncio.sleep(0.5)


def start_worker(bootstrap: str, topics: Any, workdir: Path) -> WorkerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(
        bootstrap, topics, group_id=f"bst-{nonce()}", state_dir=workdir / "state", base_env={}
    )
    worker.start()
    worker.wait_ready(120)
    return worker


async def worker_rss_phase(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    """Two equal waves of new agents (3 runs each) to one worker: the RSS after each. The
    second wave's growth per agent is what one more cached agent costs (the first also pays
    for buffers that do not grow with the fleet: RocksDB's, the consumer's, allocator pools)."""
    topics = await new_topics(bootstrap, f"bst-{nonce()}", args.partitions)
    half = args.worker_agents // 2
    worker = start_worker(bootstrap, topics, workdir / "rss")
    rss = [0.0]
    try:
        await asyncio.sleep(2)
        rss[0] = await asyncio.to_thread(worker_metric, worker, RSS)
        for wave in range(2):
            runs = []
            for i, run in enumerate(generate_runs(half * 3, 1, seed=8 + wave)):
                run["agent_id"] = f"rss-agent-{wave}-{i % half:06d}"
                runs.append((run["agent_id"], orjson.dumps(run)))
            await produce_all(bootstrap, topics.runs, runs)
            await wait_learned(worker, (wave + 1) * half * 3, 1800)
            await asyncio.sleep(3)  # commits and publishing done
            rss.append(await asyncio.to_thread(worker_metric, worker, RSS))
        metrics = parse_metrics(await asyncio.to_thread(worker.get, "/metrics") or "")
    finally:
        await asyncio.to_thread(worker.close)
    cached = metrics.get("agent_hints_agents_cached", 0) or 1
    mib = [value / 2**20 for value in rss]
    return [
        f"real worker, 2 x {half:,} agents x 3 runs, {args.partitions} partitions:",
        f"  RSS {mib[0]:,.0f} MiB ready, {mib[1]:,.0f} MiB with {half:,} agents, {mib[2]:,.0f} MiB "
        f"with {2 * half:,}: {(rss[2] - rss[1]) / half:,.0f} B per agent more "
        f"(state estimate {metrics.get('agent_hints_state_bytes', 0) / cached:,.0f} B per agent)",
    ]


async def changelog_size(bootstrap: str, topic: str) -> tuple[dict[int, int], int]:
    """(next offset per partition, bytes of all records) of the changelog topic."""
    records = await read_all(bootstrap, topic)
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends, sum(len(r.key or b"") + len(r.value or b"") for r in records)


async def busy_phase(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    topics = await new_topics(bootstrap, f"bsb-{nonce()}", 1)
    rates = (10.0, 1.0)
    live_counts = [int(rate * args.seconds) for rate in rates]
    values = [
        orjson.dumps({**run, "agent_id": "busy-agent"})
        for run in generate_runs(args.busy_runs + sum(live_counts), 1, seed=9)
    ]
    worker = start_worker(bootstrap, topics, workdir / "busy")
    lines = [f"busy agent, {args.busy_runs:,} runs learned first, then for {args.seconds:.0f} s:"]
    changelog = f"{worker.group_id}-agent-state-changelog"
    try:
        backlog = [("busy-agent", v) for v in values[: args.busy_runs]]
        await produce_all(bootstrap, topics.runs, backlog)
        await wait_learned(worker, args.busy_runs, 1800)
        await asyncio.sleep(3)
        learned, at = args.busy_runs, args.busy_runs
        for rate, count in zip(rates, live_counts, strict=True):
            live = values[at : at + count]
            at += count
            start, _ = await changelog_size(bootstrap, changelog)
            await produce_paced(bootstrap, topics.runs, b"busy-agent", live, rate)
            learned += count
            await wait_learned(worker, learned, 120)
            await asyncio.sleep(2.5)  # the last commit
            records = [
                r
                for r in await read_all(bootstrap, changelog)
                if r.offset >= start.get(r.partition, 0)
            ]
            written = sum(len(r.key or b"") + len(r.value or b"") for r in records)
            sent = sum(len(v) + len(b"busy-agent") for v in live)
            lines.append(
                f"  {rate:>4.0f} runs/s: input {sent / count:,.0f} B/run, changelog "
                f"{written / count:,.0f} B/run ({written / sent:.2f}x the input), "
                f"{written / (args.seconds + 2.5):,.0f} B per commit (1 s), {len(records)} records"
            )
    finally:
        await asyncio.to_thread(worker.close)
    return lines


async def phases(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    lines: list[str] = []
    if not args.skip_worker:
        print(f"real worker RSS, {args.worker_agents:,} agents ...", flush=True)
        lines += await worker_rss_phase(args, bootstrap, workdir)
    if not args.skip_busy:
        print(f"busy agent, {args.busy_runs:,} runs, then paced ...", flush=True)
        lines += await busy_phase(args, bootstrap, workdir)
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.state", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--agents", type=int, default=50_000, help="in-process cache phase")
    parser.add_argument("--worker-agents", type=int, default=50_000)
    parser.add_argument("--busy-runs", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="small smoke variant")
    parser.add_argument("--skip-worker", action="store_true", help="no real-worker RSS phase")
    parser.add_argument("--skip-cache", action="store_true", help="no in-process cache phase")
    parser.add_argument("--skip-busy", action="store_true", help="no busy-agent phase")
    parser.add_argument("--measure-cache", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.agents, args.worker_agents, args.busy_runs, args.seconds = 5_000, 5_000, 3_000, 10
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure_cache:
        print(orjson.dumps(measure_cache(args.measure_cache)).decode())
        return 0
    if not args.skip_cache:
        print(f"state cache, {args.agents:,} agents ...", flush=True)
        print("\n".join(cache_phase(args.agents)), flush=True)
    if args.skip_worker and args.skip_busy:
        return 0
    return run_bench("bench-state", args, phases)


if __name__ == "__main__":
    sys.exit(main())
