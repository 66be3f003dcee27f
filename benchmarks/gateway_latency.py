"""The hints gateway's added latency at a fixed request rate, measured so that it is its own.

Processes: a stand-in upstream (devtools/fake_upstream.py, keeping nothing), `python -m
worker gateway` following topics with generated agents' hints, and the load generator
(vegeta, open loop: see `open_loop`; `--load python` for the in-process asyncio client this
benchmark used before, to compare). In rounds, each of three phases sends `rate` requests/s
for `seconds`: straight to the upstream (`direct`), through the gateway without agent
headers (`proxy only`) and with them (`hints`: every request resolved and rendered). Added
latency = a gateway phase's percentile minus the direct one's in the same round; the figure
is the median over rounds (a round disturbed by the rest of the machine does not decide it),
with all rounds pooled beside it.

Two schedulings, `--priority both` by default:
- `normal`: as the processes come; on a shared machine the gateway's CPU is shared with
  whatever else runs, and each time something else runs there a request waits;
- `realtime`: gateway, upstream and load generator at SCHED_FIFO priority (root or
  CAP_SYS_NICE), so they run before any normal process as soon as they can: what cores of
  their own give. The target (p99 added <= 2 ms at 500 requests/s on one core) is judged on
  it when it can be measured.

Beside the latencies, per request through the gateway: its CPU time, the time it waited for
a CPU (runnable, not running: the machine's share of the latency), and its own measure of
the time it adds (`agent_hints_gateway_added_seconds`: reading and resolving the request,
relaying the response headers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from benchmarks.harness import percentile
from benchmarks.open_loop import LoadGeneratorMissing, Request, attack, vegeta, write_targets
from benchmarks.scheduling import can_use_realtime, child_setup, run_and_wait_s, set_realtime
from devtools.kafka_broker import free_port
from devtools.worker_process import REPO_ROOT, parse_metrics

TARGET_ADDED_P99_S = 0.002
TARGET_RATE = 500
PHASES = ("direct", "proxy only", "hints")
ADDED_METRIC = "agent_hints_gateway_added_seconds"
#: a chat request of ~1 KB, as agents send
MESSAGES = [{"role": "user", "content": "Summarise the plan in three steps. " * 20}]


@dataclass(frozen=True)
class AgentNames:
    agent_id: str
    names: list[str]


# --- set-up: topics with hints, the processes ---------------------------------------------------


async def publish(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> tuple[str, str]:
    """Fresh compacted topics holding (agent id, hints record, trie record); their names."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    tag = f"bench-gw-{uuid.uuid4().hex[:8]}"
    hints_topic, tries_topic = f"{tag}-agent-hints", f"{tag}-agent-tries"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        compact = {"cleanup.policy": "compact"}
        await admin.create_topics(
            [NewTopic(t, 4, 1, topic_configs=compact) for t in (hints_topic, tries_topic)]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for agent_id, hints, trie in records:
            await producer.send_and_wait(hints_topic, hints, key=agent_id.encode())
            await producer.send_and_wait(tries_topic, trie, key=agent_id.encode())
    finally:
        await producer.stop()
    return hints_topic, tries_topic


def cpu_plan(pin: str) -> tuple[set[int] | None, set[int] | None]:
    """(gateway CPUs, everything else's CPUs); None where nothing is pinned.

    "own": the gateway alone on the last CPU, the rest on the others; "shared": all on the
    first CPU (no hand-over between CPUs)."""
    if pin == "none" or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "shared":
        return {cpus[0]}, {cpus[0]}
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def start_process(
    cmd: list[str], env: dict[str, str], cpus: set[int] | None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        preexec_fn=child_setup(cpus, realtime=False),
    )


async def wait_http(url: str, timeout: float = 60.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


async def gateway_metrics(url: str) -> dict[str, float]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        return parse_metrics(await response.text())


# --- the requests -------------------------------------------------------------------------------


def requests(
    url: str, agents: list[AgentNames], hints: bool, count: int = 4000
) -> Iterator[Request]:
    """`count` chat requests; with `hints`, agent headers: runs of 8 calls named as the
    agent's trie nodes (so each resolves from the trie), the last one ending its run."""
    body = orjson.dumps({"model": "fake-model", "messages": MESSAGES})
    for i in range(count):
        headers = {"Content-Type": "application/json"}
        if hints:
            agent = agents[(i // 8) % len(agents)]
            headers["x-agent-id"] = agent.agent_id
            headers["x-agent-run-id"] = f"run-{i // 8}"
            headers["x-agent-call-name"] = agent.names[i % len(agent.names)]
            if i % 8 == 7:
                headers["x-agent-run-end"] = "true"
        yield Request(url, headers, body)


async def python_load(targets: list[Request], rate: float, seconds: float) -> list[float]:
    """The previous load generator: open-loop asyncio tasks on aiohttp, in this process."""
    import aiohttp

    latencies: list[float] = []
    total = int(rate * seconds)

    async def one(session: aiohttp.ClientSession, request: Request) -> None:
        start = time.perf_counter()
        async with session.post(request.url, data=request.body, headers=request.headers) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"{request.url}: {r.status}")
        latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = []
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, targets[i % len(targets)])))
        await asyncio.gather(*tasks)
    return latencies


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class PhaseFigures:
    latencies: list[float] = field(default_factory=list)
    gateway_cpu_s: float = 0.0
    gateway_wait_s: float = 0.0
    per_round: list[list[float]] = field(default_factory=list)


@dataclass
class Setup:
    args: argparse.Namespace
    gateway: subprocess.Popen[bytes]
    upstream: subprocess.Popen[bytes]
    gateway_url: str
    load_cpus: set[int] | None
    targets: dict[str, Path]
    requests: dict[str, list[Request]]
    binary: Path | None


def histogram_quantile(before: dict[str, float], after: dict[str, float], q: float) -> str:
    """The bucket bound under which a fraction `q` of the observations between two scrapes
    fall ("<= 0.5 ms")."""
    buckets = sorted(
        (float(key.split('le="')[1].rstrip('"}')), after[key] - before.get(key, 0.0))
        for key in after
        if key.startswith(ADDED_METRIC + "_bucket")
    )
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= q * total:
            return f"<= {bound * 1e3:g} ms" if bound != float("inf") else "> the largest bucket"
    return "n/a"


async def measure(setup: Setup, realtime: bool) -> dict[str, PhaseFigures]:
    args = setup.args
    figures = {phase: PhaseFigures() for phase in PHASES}
    for r in range(args.rounds):
        line = []
        for phase in PHASES:
            ran0, waited0 = run_and_wait_s(setup.gateway.pid)
            got = await load(setup, phase, args.seconds, realtime)
            ran1, waited1 = run_and_wait_s(setup.gateway.pid)
            fig = figures[phase]
            fig.latencies += got
            fig.per_round.append(got)
            if phase != "direct":
                fig.gateway_cpu_s += ran1 - ran0
                fig.gateway_wait_s += waited1 - waited0
            line.append(
                f"{phase} p50 {percentile(got, 50) * 1e3:.2f} / p99 "
                f"{percentile(got, 99) * 1e3:.2f} ms"
            )
        print(f"   round {r + 1}: " + " | ".join(line), flush=True)
    return figures


async def load(setup: Setup, phase: str, seconds: float, realtime: bool) -> list[float]:
    rate = setup.args.rate
    if setup.binary is None:
        return await python_load(setup.requests[phase], rate, seconds)
    results = await asyncio.to_thread(
        attack,
        setup.binary,
        setup.targets[phase],
        rate,
        seconds,
        cpus=setup.load_cpus,
        realtime=realtime,
    )
    if results.failures:
        raise RuntimeError(
            f"{phase}: {len(results.failures)} of {len(results.latencies)} requests failed, "
            f"e.g. {results.failures[0]}"
        )
    return results.latencies


def report(figures: dict[str, PhaseFigures], before: dict[str, float], after: dict[str, float]):
    """Print one scheduling's summary; its (median over rounds) p99 added with hints."""
    direct = figures["direct"]
    for phase in PHASES:
        got = figures[phase].latencies
        print(
            f"   all rounds, {phase}: p50 {percentile(got, 50) * 1e3:.2f} / p90 "
            f"{percentile(got, 90) * 1e3:.2f} / p99 {percentile(got, 99) * 1e3:.2f} ms "
            f"({len(got)} requests)"
        )
    added_p99 = {}
    for phase, label in (("proxy only", "proxy only"), ("hints", "with hints")):
        rounds = list(zip(figures[phase].per_round, direct.per_round, strict=True))
        p50s = [percentile(via, 50) - percentile(d, 50) for via, d in rounds]
        p99s = [percentile(via, 99) - percentile(d, 99) for via, d in rounds]
        added_p99[phase] = statistics.median(p99s)
        pooled = percentile(figures[phase].latencies, 99) - percentile(direct.latencies, 99)
        print(
            f"   added over direct, {label}: p50 {statistics.median(p50s) * 1e3:.2f} ms, p99 "
            f"{added_p99[phase] * 1e3:.2f} ms (median of rounds; rounds "
            + ", ".join(f"{v * 1e3:.2f}" for v in p99s)
            + f"; all rounds pooled {pooled * 1e3:.2f} ms)"
        )
    for phase in ("proxy only", "hints"):
        fig, n = figures[phase], max(len(figures[phase].latencies), 1)
        print(
            f"   gateway per request, {phase}: CPU {fig.gateway_cpu_s / n * 1e6:.0f} us, "
            f"waited for a CPU {fig.gateway_wait_s / n * 1e6:.0f} us"
        )
    p50, p99 = (histogram_quantile(before, after, q) for q in (0.5, 0.99))
    print(
        f"   the gateway's own measure of its added time ({ADDED_METRIC}), both gateway "
        f"phases: p50 {p50}, p99 {p99}"
    )
    return added_p99["hints"]


async def bench(
    args: argparse.Namespace,
    bootstrap: str,
    agents: list[AgentNames],
    records: list[tuple[str, bytes, bytes]],
    verdict: Callable[[bool], str],
) -> bool:
    hints_topic, tries_topic = await publish(bootstrap, records)
    gateway_cpus, other_cpus = cpu_plan(args.pin)
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)
    binary = None
    if args.load == "vegeta":
        try:
            binary = vegeta()
        except LoadGeneratorMissing as exc:
            print(f"\n2. gateway added latency: not measured ({exc}); --load python measures it "
                  "with a Python load generator instead")  # fmt: skip
            return False
    priorities = ["normal", "realtime"] if args.priority == "both" else [args.priority]
    if "realtime" in priorities and not can_use_realtime():
        print("   (realtime priority needs root or CAP_SYS_NICE: measured at normal priority only)")
        priorities = ["normal"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    upstream_port, gateway_port = free_port(), free_port()
    upstream = start_process(
        [sys.executable, "-m", "devtools.fake_upstream", "--port", str(upstream_port),
         "--no-keep"],
        env, other_cpus,
    )  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    gateway_env = {
        "WORKER_TOPICS__HINTS": hints_topic,
        "WORKER_TOPICS__TRIES": tries_topic,
        "WORKER_GATEWAY__EVENT_LOOP": args.event_loop,
    }
    if args.record:  # every hints request recorded, runs of 8 calls to a topic of their own
        gateway_env |= {
            "WORKER_GATEWAY__RECORD": "true",
            "WORKER_GATEWAY__RECORD_SPOOL_DIR": str(work / "spool"),
            "WORKER_TOPICS__RUNS": hints_topic.replace("agent-hints", "agent-runs"),
        }
    gateway = start_process(
        [sys.executable, "-m", "worker", "gateway", "--host", "127.0.0.1",
         "--port", str(gateway_port), "--upstream", f"http://127.0.0.1:{upstream_port}",
         "--bootstrap-servers", bootstrap, "--log-level", "WARNING"],
        env | gateway_env,
        gateway_cpus,
    )  # fmt: skip
    direct_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
    gateway_base = f"http://127.0.0.1:{gateway_port}"
    via_url = gateway_base + "/v1/chat/completions"
    reqs = {
        "direct": list(requests(direct_url, agents, hints=True)),
        "proxy only": list(requests(via_url, agents, hints=False)),
        "hints": list(requests(via_url, agents, hints=True)),
    }
    setup = Setup(
        args, gateway, upstream, gateway_base, other_cpus,
        {p: write_targets(work / f"{i}.jsonl", reqs[p]) for i, p in enumerate(PHASES)},
        reqs, binary,
    )  # fmt: skip
    added: dict[str, float] = {}
    try:
        await wait_http(f"http://127.0.0.1:{upstream_port}/v1/models")
        await wait_http(gateway_base + "/readyz")
        pinned = (
            f"gateway on CPU {sorted(gateway_cpus)}, upstream and load on CPU {sorted(other_cpus)}"
            if gateway_cpus and other_cpus
            else "no CPU pinning"
        )
        print(
            f"\n2. gateway added latency at {args.rate:.0f} requests/s, open loop ({args.load}; "
            f"{pinned}; event loop {args.event_loop}; {'recording runs; ' if args.record else ''}"
            f"{args.rounds} rounds of "
            f"{args.seconds:g} s per phase)",
            flush=True,
        )
        for warm in ("direct", "hints"):
            await load(setup, warm, 1.0, realtime=False)
        for priority in priorities:
            realtime = priority == "realtime"
            for proc in (gateway, upstream):
                set_realtime(proc.pid, realtime)
            print(
                "   -- realtime priority (SCHED_FIFO: gateway, upstream and load generator run "
                "before any other process, as on cores of their own)"
                if realtime
                else "   -- normal priority (the gateway's CPU is shared with whatever else "
                "runs on the machine)",
                flush=True,
            )
            before = await gateway_metrics(gateway_base)
            figures = await measure(setup, realtime)
            after = await gateway_metrics(gateway_base)
            added[priority] = report(figures, before, after)
        m = await gateway_metrics(gateway_base)
    finally:
        for proc in (gateway, upstream):
            with contextlib.suppress(OSError):
                set_realtime(proc.pid, False)
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
        shutil.rmtree(work, ignore_errors=True)
    hinted = m.get('agent_hints_gateway_hints_total{source="trie"}', 0)
    print(f"   requests that got trie hints: {hinted:.0f}")
    judged = "realtime" if "realtime" in added else "normal"
    ok = added[judged] <= TARGET_ADDED_P99_S and args.rate >= TARGET_RATE
    print(
        "   p99 added with hints: "
        + ", ".join(f"{p} priority {v * 1e3:.2f} ms" for p, v in added.items())
        + f" (target <= {TARGET_ADDED_P99_S * 1e3:.0f} ms at {TARGET_RATE} requests/s on one "
        f"core, judged at {judged} priority: {verdict(ok)})"
    )
    return ok


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="requests/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three phases")
    parser.add_argument(
        "--pin", choices=["own", "shared", "none"], default="own",
        help="own: the gateway alone on a CPU (default); shared: everything on one CPU",
    )  # fmt: skip
    parser.add_argument(
        "--priority", choices=["normal", "realtime", "both"], default="both",
        help="scheduling of the benchmark's processes (realtime: SCHED_FIFO, needs root)",
    )  # fmt: skip
    parser.add_argument(
        "--load", choices=["vegeta", "python"], default="vegeta",
        help="load generator: vegeta (Go, default) or the asyncio client in this process",
    )  # fmt: skip
    parser.add_argument(
        "--record", action="store_true",
        help="the gateway records the runs of the hints phase (8 calls each)",
    )  # fmt: skip
    parser.add_argument(
        "--event-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
        help="the gateway's gateway.event_loop setting (default auto)",
    )  # fmt: skip
