"""End-to-end benchmark of ONE worker process against a local Kafka broker.

1. Saturation: N generated runs are produced to fresh topics before the worker starts; the
   worker then works through the backlog. Sustained runs/s is measured from the hints it
   publishes (the `runs` counts on `agent-hints`), from its first hints to the moment every
   run is reflected, and over the 10%..90% stretch (no start-up, no tail).
2. Latency: unique runs are produced at a fixed rate (default 3,000/s, half the 6,000/s
   target of issue 14) to the same, warm agents; for each run, the time from sending it to the first
   HintsRecord whose `runs` count includes it (per agent, the k-th run is included once
   `runs >= baseline + k`). The time is split at the hints record's Kafka timestamp (set by
   the worker's producer): send -> worker publishes, and broker -> our consumer.

Run: `python -m benchmarks.e2e [--quick] [--bootstrap-servers HOST:PORT]`. Without a
bootstrap it uses the broker of `make kafka-up`, or starts one of its own for the run.
Topics are fresh (`bench-<nonce>-*`), so nothing else disturbs them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from benchmarks import pinning
from benchmarks.harness import (
    CpuMeter,
    add_common_arguments,
    make_runs,
    ms,
    new_topics,
    nonce,
    percentile,
    produce_all,
    run_bench,
    worker_checkout,
)
from devtools.worker_process import TopicNames, WorkerProcess, parse_metrics
from worker.kafka.reading import assign_at_end, new_reader, topic_partitions

#: issue 14: runs/s per worker, and produce -> hints p99 at half that rate; SPEC's promise
TARGET_RUNS_PER_S = 6000
TARGET_P99_S = 0.25
PROMISE_S = 1.0


# --- producing and watching -------------------------------------------------------------------


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
        kafka = {"bootstrap_servers": self.bootstrap}
        partitions = await topic_partitions(kafka, self.topic)
        self._consumer = new_reader(
            kafka, fetch_max_wait_ms=20, max_partition_fetch_bytes=4 * 1024 * 1024
        )
        await self._consumer.start()
        await assign_at_end(self._consumer, partitions)
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

    async def wait_until(
        self, done: Callable[[], bool], timeout: float, workers: list[WorkerProcess]
    ) -> bool:
        """Until `done()`; False after `timeout` s. Fails fast when a worker dies."""
        deadline = time.monotonic() + timeout
        while not done():
            for worker in workers:
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
    health: str = ""  # the workers' /healthz, when the backlog did not complete


async def saturation(
    runs: list[tuple[str, bytes]],
    bootstrap: str,
    topics: TopicNames,
    workers: list[WorkerProcess],
    broker_pid: int = 0,
    group_first: bool = False,
) -> tuple[Saturation, HintsWatcher]:
    """Backlog first, then the workers (one group): how fast do they catch up? The CPU
    figures are the first worker's, all workers' together and the broker's (`broker_pid`,
    a local one). With `group_first` the workers start first, and the backlog is produced
    (far faster than they take it) once their group has settled: a group of several is
    then measured at work, not while it forms (a rebalance inside the 10%..90% stretch
    made the same two-worker figure swing from 0.7x to 2x one worker's)."""
    worker = workers[0]
    targets = Counter(agent for agent, _ in runs)
    watcher = HintsWatcher(bootstrap, topics.hints)
    await watcher.start()
    if group_first:
        started = start_all(workers)
        await asyncio.to_thread(settle_group, workers)
    rate = await produce_all(bootstrap, topics.runs, runs)
    result = Saturation(len(runs), len(targets), rate)
    print(f"  produced {len(runs):,} runs over {len(targets)} agents ({rate:,.0f} runs/s)")
    marks: dict[str, float] = {}
    cpu = CpuMeter([], broker_pid)

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
    if not group_first:
        started = start_all(workers)
    assert worker.proc is not None
    cpu.worker_pids = [each.proc.pid for each in workers if each.proc is not None]
    timeout = 60 + len(runs) / 200
    result.complete = await watcher.wait_until(
        lambda: all(watcher.runs.get(a, 0) >= n for a, n in targets.items()), timeout, workers
    )
    finished = time.monotonic()
    result.reflected = watcher.total()
    if not result.complete:
        result.health = "; ".join(each.health() for each in workers)
    if "first" in marks:
        result.startup_s = marks["first"] - started
        span = finished - marks["first"]
        result.first_to_last_rate = (result.reflected - marks["first_total"]) / max(span, 1e-9)
    if "p10" in marks and "p90" in marks:
        result.mid_rate = 0.8 * len(runs) / max(marks["p90"] - marks["p10"], 1e-9)
    return result, watcher


def start_all(workers: list[WorkerProcess]) -> float:
    """Start every worker; returns when they were started (`time.monotonic`)."""
    started = time.monotonic()
    for each in workers:
        each.start()
    return started


def settle_group(workers: list[WorkerProcess], quiet_s: float = 5.0) -> None:
    """Wait until every worker is ready (its partitions assigned and recovered) and has
    stayed so for `quiet_s`: a group that is still forming rebalances again."""
    quiet_since: float | None = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for each in workers:
            each.check_alive()
        if all(each.is_ready() for each in workers):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_s:
                return
        else:
            quiet_since = None
        time.sleep(0.2)
    raise TimeoutError("the workers' group did not settle within 120 s")


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
    #: (seconds into the phase the run was sent, its produce -> hints time), in arrival order
    timeline: list[tuple[float, float]] = field(default_factory=list)
    missing: int = 0
    cpu: dict[str, float] = field(default_factory=dict)


async def latency(
    args: argparse.Namespace,
    bootstrap: str,
    topics: TopicNames,
    worker: WorkerProcess,
    watcher: HintsWatcher,
    prefix: str,
) -> Latency:
    """Fixed-rate runs to warm agents; per-run time from send to hints that include it."""
    result = Latency(args.rate, args.duration)
    runs = make_runs(int(args.rate * args.duration), args.agents, args.seed + 1, prefix, args.zipf)
    seq = dict(watcher.runs)  # the k-th new run of an agent is included once runs >= base + k
    pending: dict[str, deque[tuple[int, float]]] = {}

    def on_hints(agent: str, runs_count: int, now: float, created: float) -> None:
        queue = pending.get(agent)
        while queue and queue[0][0] <= runs_count:
            _, sent_at = queue.popleft()
            result.total.append(now - sent_at)
            result.timeline.append((sent_at - started_at, now - sent_at))
            result.in_worker.append(created - sent_at)
            result.delivery.append(now - created)

    watcher.on_hints = on_hints
    # linger 5 ms: the Java client's default since Kafka 4.0; keeps the broker's share of the
    # two cores realistic (1,000 one-record requests a second cost it more than the worker)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    cpu = CpuMeter([worker.proc.pid] if worker.proc else [])
    cpu.reset()
    started_at = time.time()
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
            futures.append(await producer.send(topics.runs, value, key=agent.encode()))
            if len(futures) >= 1000:  # settled as we go: one gather of every send at the end
                futures = _settled(futures)  # stalled the bench's own consumer ~300 ms
        await asyncio.gather(*futures)
        result.sent = len(runs)
        result.achieved_rate = len(runs) / (time.monotonic() - start)
        result.cpu = cpu.read()
    finally:
        await producer.stop()
    await watcher.wait_until(lambda: not any(pending.values()), 30.0, [worker])
    watcher.on_hints = None  # late hints must not touch the figures from here on
    result.missing = sum(len(q) for q in pending.values())
    for values in (result.total, result.in_worker, result.delivery):
        values.sort()
    return result


def _settled(futures: list[asyncio.Future[Any]]) -> list[asyncio.Future[Any]]:
    """The sends not acknowledged yet; raises the error of one that failed."""
    for future in futures:
        if future.done():
            future.result()
    return [future for future in futures if not future.done()]


# --- report -----------------------------------------------------------------------------------


Histograms = dict[str, tuple[float, float]]


def histograms(text: str | None) -> Histograms:
    """`{series: (sum, count)}` of every histogram in a Prometheus text exposition."""
    samples = parse_metrics(text or "")
    out: Histograms = {}
    for name, total in samples.items():
        base, brace, labels = name.partition("{")
        if base.endswith("_sum"):
            series = base[: -len("_sum")]
            count = samples.get(f"{series}_count{brace}{labels}", 0.0)
            out[series + brace + labels] = (total, count)
    return out


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


def timeline_lines(timeline: list[tuple[float, float]], seconds: float) -> list[str]:
    """p50/p99 of produce -> hints by when the runs were sent, in ten slices of the phase
    (for phases of 30 s and more: whether the tail is steady, periodic or growing)."""
    if seconds < 30 or not timeline:
        return []
    step = seconds / 10
    slices: list[list[float]] = [[] for _ in range(10)]
    for sent, took in timeline:
        slices[min(int(sent / step), 9)].append(took)
    cells = [
        f"{i * step:.0f}s {ms(percentile(values, 50))}/{ms(percentile(values, 99))}"
        for i, values in enumerate(slices)
        if values
    ]
    return ["  p50/p99 by when sent: " + ", ".join(cells)]


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
        + (
            ""
            if sat.complete
            else f"  (INCOMPLETE: {sat.reflected:,} reflected; /healthz {sat.health})"
        )
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
        lines.extend(timeline_lines(lat.timeline, lat.seconds))
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
        for bound in (TARGET_P99_S, PROMISE_S):
            ok = p99 <= bound and not lat.missing
            lines.append(
                f"         p99 <= {ms(bound)} at {lat.rate:,.0f} runs/s: "
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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--runs", type=int, default=20_000, help="saturation backlog")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rate", type=float, default=3000.0, help="latency phase runs/s")
    parser.add_argument("--duration", type=float, default=20.0, help="latency phase seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small smoke variant")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="WORKER_X=VALUE",
        help="a setting for the worker (repeatable), e.g. WORKER_PUBLISH_INTERVAL_MS=25",
    )
    parser.add_argument(
        "--profile", type=Path, help="run the worker under cProfile, write pstats here"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not give the worker a CPU of its own (see benchmarks/pinning.py)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.agents, args.rate, args.duration = 2000, 20, 200.0, 5.0
    return args


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[str]:
    tag = nonce()
    topics = await new_topics(bootstrap, f"bench-{tag}", args.partitions)
    cpus = pinning.plan() if args.pin else None
    with contextlib.ExitStack() as stack:
        pinned = "CPUs not pinned"
        if cpus is not None:
            os.sched_setaffinity(0, cpus.others)
            broker_pinned = stack.enter_context(pinning.pinned_broker(bootstrap, cpus.others))
            pinned = cpus.describe() + ("" if broker_pinned else " (broker not found: not pinned)")
        print(pinned, flush=True)
        worker = WorkerProcess(
            bootstrap,
            topics,
            group_id=f"bench-{tag}",
            state_dir=workdir / "state",
            base_env={},
            env=dict(setting.split("=", 1) for setting in args.worker_env),
            profile=args.profile,
            cpus=cpus.worker if cpus else None,
            **worker_checkout(args.worker_repo),
        )
        lines = await _phases(args, bootstrap, topics, worker, tag)
    return [*lines[:2], f"cpus: {pinned}", *lines[2:]]


async def _phases(
    args: argparse.Namespace,
    bootstrap: str,
    topics: TopicNames,
    worker: WorkerProcess,
    tag: str,
) -> list[str]:
    prefix = f"b{tag[:6]}-"  # agent ids of this bench run only
    watcher = None
    try:
        print(f"saturation phase ({args.runs:,} runs) ...", flush=True)
        backlog = make_runs(args.runs, args.agents, args.seed, prefix, args.zipf)
        sat, watcher = await saturation(backlog, bootstrap, topics, [worker])
        after_sat = histograms(await asyncio.to_thread(worker.get, "/metrics"))
        lat, lat_means = None, {}
        if not args.skip_latency and sat.complete:
            await asyncio.to_thread(worker.wait_ready, 120)
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
        await asyncio.to_thread(stop_worker, worker)


def stop_worker(worker: WorkerProcess) -> None:
    """SIGTERM (so a profile gets written), then clean up whatever is left."""
    if worker.proc is not None:
        with contextlib.suppress(AssertionError):
            worker.stop(timeout=30)
    worker.close()


def main(argv: list[str] | None = None) -> int:
    """Run both phases and print the figures; everything started is torn down."""
    args = parse_args(argv)
    return run_bench("bench-e2e", args, bench, after=lambda: _maybe_profile(args))


def _maybe_profile(args: argparse.Namespace) -> None:
    if args.profile and args.profile.exists():
        print_profile(args.profile)


if __name__ == "__main__":
    sys.exit(main())
