"""What the end-to-end benchmarks share: a broker, fresh topics, generated runs, CPU meters.

A benchmark is an async `phases(args, bootstrap, workdir) -> lines`; `run_bench` starts a
broker for it (or reuses the one `make kafka-up` started, or `--bootstrap-servers`), prints
its lines and tears everything down, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer

from devtools.kafka_broker import KafkaBroker, install, running_broker
from devtools.worker_process import TopicNames
from worker.demo_workload import generate_runs
from worker.kafka.topics import prepare_topics
from worker.settings import load_settings

Phases = Callable[[argparse.Namespace, str, Path], Awaitable[list[str]]]


def percentile(values: list[float], p: float) -> float:
    """Linear-interpolation percentile (SPEC 5's rule) of values (0 when empty)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0 when unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return float(sum(values) - idle), float(sum(values))


class CpuReading(NamedTuple):
    """CPU seconds so far (and the clock), for `CpuMeter` to subtract."""

    wall: float
    worker: float  # the first worker's
    workers: float  # all workers' together
    bench: float  # this process's
    machine_busy: float  # jiffies
    machine_total: float
    broker: float


@dataclass
class CpuMeter:
    """CPU used by the worker (the first of `worker_pids`), by all of them, by the broker
    (when its process is known), by this process and by the machine over an interval."""

    worker_pids: list[int]
    broker_pid: int = 0
    start: CpuReading | None = None

    def now(self) -> CpuReading:
        seconds = [cpu_seconds(pid) for pid in self.worker_pids] or [0.0]
        busy, total = machine_busy()
        broker = cpu_seconds(self.broker_pid) if self.broker_pid else 0.0
        return CpuReading(time.monotonic(), seconds[0], sum(seconds), time.process_time(),
                          busy, total, broker)  # fmt: skip

    def reset(self) -> None:
        self.start = self.now()

    def read(self) -> dict[str, float]:
        """Cores' worth used since `reset` (1.0 = one core fully busy); machine busy share."""
        start = self.start or CpuReading(0, 0, 0, 0, 0, 0, 0)
        now = self.now()
        wall = max(now.wall - start.wall, 1e-9)
        return {
            "seconds": wall,
            "worker_cores": (now.worker - start.worker) / wall,
            "workers_cores": (now.workers - start.workers) / wall,
            "bench_cores": (now.bench - start.bench) / wall,
            "machine_busy": (now.machine_busy - start.machine_busy)
            / max(now.machine_total - start.machine_total, 1e-9),
            "broker_cores": (now.broker - start.broker) / wall,
        }


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The given bootstrap, the broker `make kafka-up` started, or one of our own."""
    if bootstrap:
        yield bootstrap
        return
    running = running_broker()
    if running is not None:
        yield running.bootstrap
        return
    install()
    with KafkaBroker(die_with_parent=True) as own:
        own.start()
        yield own.bootstrap


async def new_topics(bootstrap: str, prefix: str, partitions: int) -> TopicNames:
    """Fresh topics `<prefix>-<nonce>-*` as the worker would create them."""
    topics = TopicNames.unique(prefix)
    settings = load_settings(
        overrides={
            "bootstrap_servers": bootstrap,
            "topics": {**topics.settings(), "partitions": partitions},
        }
    )
    await prepare_topics(settings)
    return topics


def worker_checkout(repo: Path | None) -> dict[str, Any]:
    """WorkerProcess options that run the worker of checkout `repo` (None: this one)."""
    if repo is None:
        return {}
    python = repo.resolve() / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"--worker-repo {repo}: no {python} (run `make install` there)")
    return {"python": str(python), "cwd": repo.resolve()}


def make_runs(
    count: int,
    agents: int,
    seed: int,
    prefix: str,
    zipf: float = 0.0,
    every_agent: bool = False,
) -> list[tuple[str, bytes]]:
    """Pre-serialised (agent id, run JSON) pairs, agent ids prefixed to keep them unique;
    `zipf` and `every_agent` shape the fleet (see `generate_runs`)."""
    out = []
    for run in generate_runs(count, agents, seed=seed, zipf=zipf, every_agent=every_agent):
        run["agent_id"] = prefix + run["agent_id"]
        out.append((run["agent_id"], orjson.dumps(run)))
    return out


async def produce_all(bootstrap: str, topic: str, runs: list[tuple[str, bytes]]) -> float:
    """Send everything as fast as possible; return runs/s until all are acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        start = time.monotonic()
        futures = [await producer.send(topic, value, key=agent.encode()) for agent, value in runs]
        await asyncio.gather(*futures)
        return len(runs) / (time.monotonic() - start)
    finally:
        await producer.stop()


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def run_bench(
    name: str,
    args: argparse.Namespace,
    phases: Phases,
    after: Callable[[], None] | None = None,
) -> int:
    """Start (or reuse) a broker, run `phases`, print their lines; always tear down."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM -> cleanup too
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    try:
        with broker(args.bootstrap_servers) as bootstrap:
            print(f"kafka at {bootstrap}; worker state and log in {workdir}", flush=True)
            lines = asyncio.run(phases(args, bootstrap, workdir))
        print("\n".join(lines), flush=True)
        if after is not None:
            after()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"{name} failed: {exc!r}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", default=os.environ.get("WORKER_BOOTSTRAP_SERVERS"))
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--zipf",
        type=float,
        default=0.0,
        help="skew runs over agents: the k-th agent gets k**-ZIPF of them (0: uniform; "
        "0.73 is a realistic fleet's shape)",
    )
    parser.add_argument(
        "--worker-repo",
        type=Path,
        help="run the worker of another checkout (with its own .venv), to compare side by side",
    )
