"""End-to-end benchmark of ONE worker process against a local Kafka broker.

1. Saturation: N generated runs are produced to fresh topics before the worker starts; the
   worker then works through the backlog. Sustained runs/s is measured from the hints it
   publishes (the `runs` counts on `agent-hints`), from its first hints to the moment every
   run is reflected, and over the 10%..90% stretch (no start-up, no tail).
2. Latency: unique runs are produced at a fixed rate (default 1,000/s, half the 2,000/s
   target) to the same, warm agents; for each run, the time from sending it to the first
   HintsRecord whose `runs` count includes it (per agent, the k-th run is included once
   `runs >= baseline + k`). The time is split at the hints record's Kafka timestamp (set by
   the worker's producer): send -> worker publishes, and broker -> our consumer.

Run: `python -m worker.bench_e2e [--quick] [--bootstrap-servers HOST:PORT]`. Without a
bootstrap it starts the broker with `scripts/kafka.sh up` and stops it at the end (unless one
was already running). Topics are fresh (`bench-<nonce>.*`), so nothing else disturbs them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from worker import bench_pinning
from worker.demo import ensure_topics, topic_specs
from worker.inspect import topic_partitions

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = ROOT / "scripts" / "kafka.sh"
TARGET_RUNS_PER_S = 2000
TARGET_P99_S = 1.0


# --- small helpers ----------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear-interpolation percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


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


@dataclass
class CpuMeter:
    """CPU used by the worker, by this process and by the machine over an interval."""

    worker_pid: int
    start: tuple[float, float, float, float, float] = (0, 0, 0, 0, 0)

    def reset(self) -> None:
        self.start = (time.monotonic(), cpu_seconds(self.worker_pid), time.process_time(),
                      *machine_busy())  # fmt: skip

    def read(self) -> dict[str, float]:
        """Cores' worth used since `reset` (1.0 = one core fully busy); machine busy share."""
        wall = max(time.monotonic() - self.start[0], 1e-9)
        busy, total = machine_busy()
        span = max(total - self.start[4], 1e-9)
        return {
            "seconds": wall,
            "worker_cores": (cpu_seconds(self.worker_pid) - self.start[1]) / wall,
            "bench_cores": (time.process_time() - self.start[2]) / wall,
            "machine_busy": (busy - self.start[3]) / span,
        }


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the bench process dies (Linux), so no worker leaks."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --- broker and worker ------------------------------------------------------------------------


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """The given bootstrap, or a broker from `scripts/kafka.sh up` (stopped if we started it)."""
    if bootstrap:
        yield bootstrap
        return
    subprocess.run([str(KAFKA_SH), "install"], check=True, stdout=subprocess.DEVNULL)
    up = subprocess.run([str(KAFKA_SH), "up"], check=True, capture_output=True, text=True)
    found = re.findall(r"^KAFKA_BOOTSTRAP=(\S+)$", up.stdout, re.M)
    started = "already running" not in up.stdout
    try:
        if not found:
            raise RuntimeError(f"kafka.sh up printed no KAFKA_BOOTSTRAP line:\n{up.stdout}")
        yield found[-1]
    finally:
        if started:
            subprocess.run([str(KAFKA_SH), "down"], check=False, capture_output=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Worker:
    """One `python -m worker run` subprocess on the bench topics."""

    bootstrap: str
    topics: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    profile: Path | None = None
    cpus: set[int] | None = None  # pin the worker to these CPUs (see bench_pinning)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"

    def start(self) -> None:
        env = dict(os.environ)
        for name, topic in self.topics.items():
            env[f"WORKER_TOPICS__{name.upper()}"] = topic
        profiler = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        command = [
            sys.executable, *profiler, "-m", "worker", "run",
            "--bootstrap-servers", self.bootstrap,
            "--group-id", f"bench-{self.topics['runs']}",
            "--state-dir", str(self.workdir / "state"),
            "--metrics-port", str(self.port),
        ]  # fmt: skip
        cpus = self.cpus

        def before_exec() -> None:
            _die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)

        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=before_exec,
            )  # fmt: skip

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited; log:\n{self.log_tail()}")

    def get(self, path: str) -> str | None:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            return None

    async def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while await asyncio.to_thread(self.get, "/readyz") is None:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {timeout:.0f} s:\n{self.log_tail()}")
            await asyncio.sleep(0.25)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --- producing and watching -------------------------------------------------------------------


def make_runs(count: int, agents: int, seed: int, prefix: str) -> list[tuple[str, bytes]]:
    """Pre-serialised (agent id, run JSON) pairs, agent ids prefixed to keep them unique."""
    from worker.workload import generate_runs

    out = []
    for run in generate_runs(count, agents, seed=seed):
        run["agent_id"] = prefix + run["agent_id"]
        out.append((run["agent_id"], orjson.dumps(run)))
    return out


async def produce_all(producer: Any, topic: str, runs: list[tuple[str, bytes]]) -> float:
    """Send everything as fast as possible; return runs/s until all are acknowledged."""
    start = time.monotonic()
    futures = [await producer.send(topic, value, key=agent.encode()) for agent, value in runs]
    await asyncio.gather(*futures)
    return len(runs) / (time.monotonic() - start)


OnHints = Callable[[str, int, float, float], None]


class HintsWatcher:
    """Consumes the hints topic from its end at `start`; tracks each agent's `runs` count."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.runs: dict[str, int] = {}
        self.first_at: float | None = None
        self.on_hints: OnHints | None = None
        self.updated = asyncio.Event()
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        ids = await topic_partitions(self._consumer, self.topic)
        parts = [TopicPartition(self.topic, p) for p in ids]
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batches.values():
                for record in records:
                    self._handle(record, now)
            if batches:
                self.updated.set()

    def _handle(self, record: Any, now: float) -> None:
        if not record.value:
            return
        value = orjson.loads(record.value)
        agent, runs = value.get("agent_id"), int(value.get("runs", 0))
        if runs <= self.runs.get(agent, 0):
            return
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.runs[agent] = runs
        if self.on_hints is not None:
            self.on_hints(agent, runs, now, record.timestamp / 1000)

    def total(self) -> int:
        return sum(self.runs.values())

    async def wait_until(self, done: Callable[[], bool], timeout: float, worker: Worker) -> bool:
        """Until `done()`; False after `timeout` s. Fails fast when the worker dies."""
        deadline = time.monotonic() + timeout
        while not done():
            worker.check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.updated.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.updated.wait(), min(remaining, 1.0))
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


# --- phases -----------------------------------------------------------------------------------


@dataclass
class Saturation:
    runs: int
    agents: int
    produce_rate: float
    startup_s: float = 0.0
    first_to_last_rate: float = 0.0
    mid_rate: float = 0.0
    complete: bool = False
    reflected: int = 0
    cpu: dict[str, float] = field(default_factory=dict)


async def saturation(
    args: argparse.Namespace, bootstrap: str, topics: dict[str, str], worker: Worker, prefix: str
) -> tuple[Saturation, HintsWatcher]:
    """Backlog first, then the worker: how fast does it catch up?"""
    from aiokafka import AIOKafkaProducer

    runs = make_runs(args.runs, args.agents, args.seed, prefix)
    targets = Counter(agent for agent, _ in runs)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        rate = await produce_all(producer, topics["runs"], runs)
    finally:
        await producer.stop()
    result = Saturation(len(runs), len(targets), rate)
    print(f"  pre-produced {len(runs):,} runs over {len(targets)} agents ({rate:,.0f} runs/s)")

    watcher = HintsWatcher(bootstrap, topics["hints"])
    await watcher.start()
    marks: dict[str, float] = {}
    cpu = CpuMeter(0)

    def on_hints(agent: str, runs_count: int, now: float, created: float) -> None:
        done = watcher.total()
        if "first" not in marks:
            marks["first"], marks["first_total"] = time.monotonic(), done
        if "p10" not in marks and done >= 0.1 * len(runs):
            marks["p10"] = time.monotonic()
            cpu.reset()
        if "p90" not in marks and done >= 0.9 * len(runs):
            marks["p90"] = time.monotonic()
            result.cpu = cpu.read()

    watcher.on_hints = on_hints
    started = time.monotonic()
    worker.start()
    assert worker.proc is not None
    cpu.worker_pid = worker.proc.pid
    timeout = 60 + len(runs) / 200
    result.complete = await watcher.wait_until(
        lambda: all(watcher.runs.get(a, 0) >= n for a, n in targets.items()), timeout, worker
    )
    finished = time.monotonic()
    result.reflected = watcher.total()
    if "first" in marks:
        result.startup_s = marks["first"] - started
        span = finished - marks["first"]
        result.first_to_last_rate = (result.reflected - marks["first_total"]) / max(span, 1e-9)
    if "p10" in marks and "p90" in marks:
        result.mid_rate = 0.8 * len(runs) / max(marks["p90"] - marks["p10"], 1e-9)
    return result, watcher


@dataclass
class Latency:
    rate: float
    seconds: float
    sent: int = 0
    achieved_rate: float = 0.0
    max_send_lag_s: float = 0.0
    total: list[float] = field(default_factory=list)
    in_worker: list[float] = field(default_factory=list)
    delivery: list[float] = field(default_factory=list)
    missing: int = 0
    cpu: dict[str, float] = field(default_factory=dict)


async def latency(
    args: argparse.Namespace,
    bootstrap: str,
    topics: dict[str, str],
    worker: Worker,
    watcher: HintsWatcher,
    prefix: str,
) -> Latency:
    """Fixed-rate runs to warm agents; per-run time from send to hints that include it."""
    from aiokafka import AIOKafkaProducer

    result = Latency(args.rate, args.duration)
    runs = make_runs(int(args.rate * args.duration), args.agents, args.seed + 1, prefix)
    seq = dict(watcher.runs)  # the k-th new run of an agent is included once runs >= base + k
    pending: dict[str, deque[tuple[int, float]]] = {}

    def on_hints(agent: str, runs_count: int, now: float, created: float) -> None:
        queue = pending.get(agent)
        while queue and queue[0][0] <= runs_count:
            _, sent_at = queue.popleft()
            result.total.append(now - sent_at)
            result.in_worker.append(created - sent_at)
            result.delivery.append(now - created)

    watcher.on_hints = on_hints
    # linger 5 ms: the Java client's default since Kafka 4.0; keeps the broker's share of the
    # two cores realistic (1,000 one-record requests a second cost it more than the worker)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    cpu = CpuMeter(worker.proc.pid if worker.proc else 0)
    cpu.reset()
    try:
        futures = []
        start = time.monotonic()
        for index, (agent, value) in enumerate(runs):
            due = start + index / args.rate
            lag = time.monotonic() - due
            if lag < 0:
                await asyncio.sleep(-lag)
            result.max_send_lag_s = max(result.max_send_lag_s, lag)
            seq[agent] = seq.get(agent, 0) + 1
            pending.setdefault(agent, deque()).append((seq[agent], time.time()))
            futures.append(await producer.send(topics["runs"], value, key=agent.encode()))
        await asyncio.gather(*futures)
        result.sent = len(runs)
        result.achieved_rate = len(runs) / (time.monotonic() - start)
        result.cpu = cpu.read()
    finally:
        await producer.stop()
    await watcher.wait_until(lambda: not any(pending.values()), 30.0, worker)
    watcher.on_hints = None  # late hints must not touch the figures from here on
    result.missing = sum(len(q) for q in pending.values())
    for values in (result.total, result.in_worker, result.delivery):
        values.sort()
    return result


# --- report -----------------------------------------------------------------------------------


Histograms = dict[str, tuple[float, float]]


def histograms(text: str | None) -> Histograms:
    """`{series: (sum, count)}` of every histogram/summary in a Prometheus text exposition."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in (text or "").splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        base = name.split("{", 1)[0]
        try:
            number = float(value)
        except ValueError:
            continue
        if base.endswith("_sum"):
            sums[name.replace("_sum", "", 1)] = number
        elif base.endswith("_count"):
            counts[name.replace("_count", "", 1)] = number
    return {key: (total, counts.get(key, 0.0)) for key, total in sums.items()}


def histogram_means(after: Histograms, before: Histograms | None = None) -> dict[str, float]:
    """Mean per series over the interval between two scrapes (from zero without `before`)."""
    means = {}
    for key, (total, count) in after.items():
        total0, count0 = (before or {}).get(key, (0.0, 0.0))
        if count > count0:
            means[key] = (total - total0) / (count - count0)
    return means


def _means_lines(means: dict[str, float]) -> list[str]:
    if not means:
        return []
    lines = ["  worker /metrics histogram means:"]
    for key, mean in sorted(means.items()):
        lines.append(f"    {key}: {ms(mean) if 'seconds' in key else f'{mean:,.3f}'}")
    return lines


def _cores(cpu: dict[str, float]) -> str:
    if not cpu:
        return "n/a"
    return (
        f"worker {cpu['worker_cores'] * 100:.0f}% of a core, bench process "
        f"{cpu['bench_cores'] * 100:.0f}%, machine {cpu['machine_busy'] * 100:.0f}% busy "
        f"({os.cpu_count()} CPUs, broker included)"
    )


def report(
    sat: Saturation,
    lat: Latency | None,
    sat_means: dict[str, float],
    lat_means: dict[str, float],
) -> list[str]:
    lines = ["", "== end-to-end figures (one worker process)"]
    lines.append(
        f"saturation: {sat.runs:,} runs, {sat.agents} agents, backlog produced before start"
    )
    lines.append(f"  worker start -> first hints: {sat.startup_s:.1f} s")
    lines.append(
        f"  sustained: {sat.first_to_last_rate:,.0f} runs/s first->last hints; "
        f"{sat.mid_rate:,.0f} runs/s over 10%..90%"
        + ("" if sat.complete else f"  (INCOMPLETE: {sat.reflected:,} reflected)")
    )
    if sat.cpu and sat.mid_rate:
        per_run = sat.cpu["worker_cores"] / sat.mid_rate * 1e6
        lines.append(f"  cpu over 10%..90%: {_cores(sat.cpu)}")
        lines.append(f"  worker CPU per run: {per_run:,.0f} us")
    lines.extend(_means_lines(sat_means))
    if lat is not None:
        lines.append(
            f"latency: {lat.sent:,} runs at {lat.rate:,.0f} runs/s for {lat.seconds:.0f} s "
            f"(achieved {lat.achieved_rate:,.0f} runs/s, max send lag {ms(lat.max_send_lag_s)})"
        )
        for label, values in (
            ("produce -> hints    ", lat.total),
            ("  send -> worker publishes", lat.in_worker),
            ("  broker -> bench consumer", lat.delivery),
        ):
            p50, p90, p99 = (percentile(values, p) for p in (50, 90, 99))
            top = values[-1] if values else 0.0
            lines.append(f"  {label}: p50 {ms(p50)}  p90 {ms(p90)}  p99 {ms(p99)}  max {ms(top)}")
        if lat.missing:
            lines.append(f"  {lat.missing} runs never showed up in hints within 30 s")
        consume_to_publish = lat_means.get("agent_hints_consume_to_publish_seconds")
        if consume_to_publish is not None and lat.in_worker:
            before = sum(lat.in_worker) / len(lat.in_worker) - consume_to_publish
            lines.append(
                f"  mean split in the worker: send -> consumed ~{ms(before)}, "
                f"consumed -> published {ms(consume_to_publish)}"
            )
        if lat.rate > max(sat.mid_rate, sat.first_to_last_rate):
            lines.append("  NOTE: rate above the measured saturation; latency is queueing")
        lines.append(f"  cpu: {_cores(lat.cpu)}")
        lines.extend(_means_lines(lat_means))
    rate = max(sat.first_to_last_rate, sat.mid_rate)
    lines.append(
        f"targets: >= {TARGET_RUNS_PER_S:,} runs/s: "
        f"{'met' if rate >= TARGET_RUNS_PER_S else 'NOT met'} ({rate:,.0f})"
    )
    if lat is not None and lat.total:
        p99 = percentile(lat.total, 99)
        ok = p99 < TARGET_P99_S and not lat.missing
        lines.append(
            f"         p99 < {TARGET_P99_S:.0f} s at {lat.rate:,.0f} runs/s: "
            f"{'met' if ok else 'NOT met'} ({ms(p99)})"
        )
    return lines


def print_profile(path: Path, limit: int = 25) -> None:
    """The worker's hottest functions (own time) from a cProfile dump."""
    import pstats

    print(f"\nworker profile ({path}), top {limit} by own time:")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(limit)


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.bench_e2e", description=__doc__)
    parser.add_argument("--bootstrap-servers", default=os.environ.get("WORKER_BOOTSTRAP_SERVERS"))
    parser.add_argument("--runs", type=int, default=20_000, help="saturation backlog")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase runs/s")
    parser.add_argument("--duration", type=float, default=20.0, help="latency phase seconds")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small smoke variant")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--profile", type=Path, help="run the worker under cProfile, write pstats here"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not give the worker a CPU of its own (see worker/bench_pinning.py)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.agents, args.rate, args.duration = 2000, 20, 200.0, 5.0
    return args


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    nonce = uuid.uuid4().hex[:10]
    topics = {
        "runs": f"bench-{nonce}.agent-runs",
        "hints": f"bench-{nonce}.agent-hints",
        "tries": f"bench-{nonce}.agent-tries",
        "dlq": f"bench-{nonce}.agent-runs.dlq",
    }
    specs = topic_specs(topics["runs"], topics["hints"], topics["tries"], args.partitions)
    await ensure_topics(bootstrap, specs)
    cpus = bench_pinning.plan() if args.pin else None
    with contextlib.ExitStack() as stack:
        pinning = "CPUs not pinned"
        if cpus is not None:
            os.sched_setaffinity(0, cpus.others)
            broker_pinned = stack.enter_context(bench_pinning.pinned_broker(bootstrap, cpus.others))
            pinning = cpus.describe() + ("" if broker_pinned else " (broker not found: not pinned)")
        print(pinning, flush=True)
        worker = Worker(bootstrap, topics, workdir, profile=args.profile, cpus=cpus and cpus.worker)
        lines = await _phases(args, bootstrap, topics, worker, nonce)
    return [*lines[:2], f"cpus: {pinning}", *lines[2:]]


async def _phases(
    args: argparse.Namespace, bootstrap: str, topics: dict[str, str], worker: Worker, nonce: str
) -> list[str]:
    prefix = f"b{nonce[:6]}-"  # agent ids of this bench run only
    watcher = None
    try:
        print(f"saturation phase ({args.runs:,} runs) ...", flush=True)
        sat, watcher = await saturation(args, bootstrap, topics, worker, prefix)
        after_sat = histograms(await asyncio.to_thread(worker.get, "/metrics"))
        lat, lat_means = None, {}
        if not args.skip_latency and sat.complete:
            await worker.wait_ready()
            print(f"latency phase ({args.rate:,.0f} runs/s for {args.duration:.0f} s) ...")
            lat = await latency(args, bootstrap, topics, worker, watcher, prefix)
            after_lat = histograms(await asyncio.to_thread(worker.get, "/metrics"))
            lat_means = histogram_means(after_lat, after_sat)
        if args.json:
            args.json.write_bytes(orjson.dumps({"saturation": sat, "latency": lat}))
        return report(sat, lat, histogram_means(after_sat), lat_means)
    finally:
        if watcher is not None:
            await watcher.stop()
        await asyncio.to_thread(worker.stop)


def main(argv: list[str] | None = None) -> int:
    """Run both phases and print the figures; everything started is torn down."""
    args = parse_args(argv)
    return run_bench("bench-e2e", args, bench, after=lambda: _maybe_profile(args))


def _maybe_profile(args: argparse.Namespace) -> None:
    if args.profile and args.profile.exists():
        print_profile(args.profile)


def run_bench(
    name: str,
    args: argparse.Namespace,
    phases: Callable[[argparse.Namespace, str, Path], Awaitable[list[str]]],
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
        print(f"{name} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
