"""`make bench-dynamo` / `python -m benchmarks dynamo`: do hints make agents finish sooner
on a real Dynamo router? Issue 22's A/B, end to end.

1. Dynamo 1.6.1 (installed into `.cache/dynamo` on first use), the mocker engine (8
   sequences, real-time simulated timing) and the frontend with its KV router and router
   queue, all on loopback; Kafka, the worker (learning settings: `--semantics`,
   `--worker-set`), and `python -m worker gateway` per arm.
2. Calibration: the mix's capacity in runs/s (closed loop, `--calibrate-in-flight` runs).
3. Learning: `--learn-runs` runs of each program at 0.7x capacity through a recording
   gateway (`--record`); the worker learns them from the runs the gateway recorded.
4. Measured phases: one seeded Poisson schedule per load (`--loads`, default 1.4x and
   0.7x, `--seconds` of arrivals), run through a gateway per arm (`off`: no agent headers,
   so no hints; else `--priority-policy ARM`), fresh prompt salts per phase, arms
   interleaved in a rotating order, `--repeats` times.
5. Report: makespan per program (p50/p90/mean) and TTFT, medians over repeats with ranges;
   the gateway's added latency, end to end (`hop`); issue 22's targets; a plot (`--plot`).

`--probe-only` runs only the end-to-end probe of the gateway's added latency (`hop`; with
`--baseline-repo DIR` a gateway of another checkout beside this one's).

Run: `python -m benchmarks dynamo [--arms off,none,level,age-remaining,classes] [--repeats 2]
[--seconds 60] [--semantics corrected] [--gateway-set gateway.priority.tokens_per_s=25]
[--results FILE] [--report-only FILE]`; `python -m benchmarks dynamo --probe-only
[--probe-pairs 300] [--baseline-repo DIR]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.dynamo import hop, phases, report
from benchmarks.dynamo.plot import plot
from benchmarks.dynamo.programs import PROGRAMS
from benchmarks.dynamo.schedule import learning_schedule, poisson_schedule
from benchmarks.dynamo.stack import Gateway, classes_env
from benchmarks.harness import broker, new_topics
from devtools.dynamo.install import install
from devtools.dynamo.processes import DynamoStack
from devtools.worker_process import TopicNames, WorkerProcess, read_latest
from worker.settings import PRIORITY_POLICIES, PrioritySettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PLOT = REPO_ROOT / "docs" / "dynamo-bench.png"
DEFAULT_RESULTS = REPO_ROOT / ".cache" / "dynamo" / "last-results.json"
#: the `classes` arm's service classes: the interactive agent first, background work last
CLASSES = {"chat-assistant": 2, "researcher": 1, "batch-tagger": 0}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks dynamo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arms", default=",".join(["off", *PRIORITY_POLICIES]))
    parser.add_argument("--loads", default="1.4,0.7")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="of arrivals per phase")
    parser.add_argument("--learn-runs", type=int, default=30, help="per program")
    parser.add_argument("--calibrate-s", type=float, default=45.0)
    parser.add_argument("--calibrate-in-flight", type=int, default=16)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--semantics", default=None, help="learner.semantics of the worker")
    parser.add_argument("--worker-set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--gateway-set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument("--report-only", type=Path, help="report and plot a saved results file")
    parser.add_argument(
        "--probe-only", action="store_true", help="only the gateway's added latency (hop)"
    )
    parser.add_argument("--probe-pairs", type=int, default=300, help="requests per probe arm")
    parser.add_argument(
        "--baseline-repo", type=Path, help="also probe a gateway of this checkout (before/after)"
    )
    args = parser.parse_args(argv)
    args.arm_list = [a for a in args.arms.split(",") if a]
    unknown = set(args.arm_list) - {"off", *PRIORITY_POLICIES}
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}")
    args.load_list = [float(x) for x in args.loads.split(",")]
    return args


async def wait_learned(bootstrap: str, topics: TopicNames, runs: int, timeout: float = 180.0):
    """The worker's hints and tries once every program's hints count `runs` runs."""
    deadline = time.monotonic() + timeout
    while True:
        hints = await asyncio.to_thread(read_latest, bootstrap, topics.hints)
        if all(hints.get(p, {}).get("runs", 0) >= runs for p in PROGRAMS):
            tries = await asyncio.to_thread(read_latest, bootstrap, topics.tries)
            return hints, tries
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the worker learned only { ({k: v['runs'] for k, v in hints.items()}) }"
            )
        await asyncio.sleep(2)


async def bench(
    args: argparse.Namespace, dynamo: DynamoStack, bootstrap: str, topics: TopicNames, workdir: Path
) -> dict[str, Any]:
    def gateway(policy: str, record: bool = False) -> Gateway:
        env = classes_env(CLASSES) if policy == "classes" else {}
        return Gateway(
            dynamo.url,
            bootstrap,
            topics,
            workdir,
            policy=policy,
            record=record,
            settings=list(args.gateway_set),
            env=env,
        ).start()

    learn_gw = gateway("none", record=True)
    try:
        capacity = await phases.calibrate(
            learn_gw.url, args.calibrate_in_flight, args.calibrate_s, 10.0, args.seed
        )
        print(f"capacity: {capacity:.2f} runs/s of the mix", flush=True)
        schedule = learning_schedule(0.7 * capacity, args.learn_runs, args.seed + 1)
        start = time.monotonic()
        learning = await phases.open_loop(
            learn_gw.url, schedule, agent_headers=True, salt=f"learn-{uuid.uuid4().hex[:6]}"
        )
        print(
            f"learning: {len(learning)} runs recorded in {time.monotonic() - start:.0f} s, "
            f"{sum(not r.complete for r in learning)} incomplete",
            flush=True,
        )
    finally:
        learn_gw.stop()  # its recorder sends what is left
    hints, tries = await wait_learned(bootstrap, topics, args.learn_runs)
    print("learned (the worker's tries, index 1 of each call name):")
    print("\n".join(report.learned(hints, tries)), flush=True)

    results: dict[str, Any] = {
        "capacity_runs_per_s": capacity,
        "loads": args.load_list,
        "arms": args.arm_list,
        "repeats": args.repeats,
        "seconds": args.seconds,
        "phases": [],
        "settings": {
            "semantics": args.semantics,
            "worker_set": args.worker_set,
            "gateway_set": args.gateway_set,
            "classes": CLASSES,
        },
    }
    arms = args.arm_list
    added: dict[float, float] = {}
    results["gateway_added_buckets"] = added
    for repeat in range(args.repeats):
        for load in args.load_list:
            schedule = poisson_schedule(load * capacity, args.seconds, args.seed + int(load * 100))
            order = arms[repeat % len(arms) :] + arms[: repeat % len(arms)]
            for arm in order:
                gw = gateway("none" if arm == "off" else arm)
                try:
                    start = time.monotonic()
                    runs = await phases.open_loop(
                        gw.url,
                        schedule,
                        agent_headers=arm != "off",
                        salt=f"{arm}-{repeat}-{uuid.uuid4().hex[:6]}",
                    )
                    if arm != "off":
                        for bound, count in gw.added_buckets().items():
                            added[bound] = added.get(bound, 0.0) + count
                finally:
                    gw.stop()
                phase = {
                    "load": load,
                    "arm": arm,
                    "repeat": repeat,
                    "runs": [report.run_json(r) for r in runs],
                }
                results["phases"].append(phase)
                f = report.phase_figures(phase["runs"])
                print(
                    f"repeat {repeat} load {load:g}x {arm:>13}: {len(runs)} runs in "
                    f"{time.monotonic() - start:.0f} s, mean {f['all mean']:.1f} s, "
                    f"chat p50 {f['chat-assistant p50']:.1f} s, incomplete "
                    f"{int(f['incomplete'])}",
                    flush=True,
                )
                args.results.write_text(json.dumps(results))
    policy = PrioritySettings().policy
    results["added_latency"] = await probe(args, dynamo, bootstrap, topics, workdir, policy)
    return results


async def probe(
    args: argparse.Namespace,
    dynamo: DynamoStack,
    bootstrap: str,
    topics: TopicNames,
    workdir: Path,
    policy: str,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The end-to-end probe (`hop`) through a gateway of this checkout, and one of
    `--baseline-repo` beside it when given."""
    repos = [None, *([args.baseline_repo.resolve()] if args.baseline_repo else [])]
    gateways: list[Gateway] = []
    try:
        for repo in repos:
            where = {} if repo is None else {"cwd": repo, "python": hop.baseline_python(repo)}
            gw = Gateway(
                dynamo.url, bootstrap, topics, workdir, policy=policy,
                settings=list(args.gateway_set), env=dict(env or {}), **where,
            )  # fmt: skip
            gateways.append(gw.start())
        urls = dict(zip((hop.GATEWAY, hop.BASELINE), (g.url for g in gateways), strict=False))
        return await hop.run(dynamo.url, urls, args.probe_pairs)
    finally:
        for gw in gateways:
            gw.stop()


async def probe_only(
    args: argparse.Namespace, dynamo: DynamoStack, bootstrap: str, workdir: Path
) -> dict[str, Any]:
    """The probe alone, no worker: gateways with fallback hints and the `level` policy."""
    topics = await new_topics(bootstrap, "dynamo-probe", 1)
    return await probe(args, dynamo, bootstrap, topics, workdir, "level", hop.probe_only_env())


def show(results: dict[str, Any], plot_path: Path | None) -> None:
    print("\n".join(report.markdown(results)))
    print("\n".join(report.ttft_markdown(results)))
    print()
    if "added_latency" in results:
        print("\n".join(hop.lines(results["added_latency"])))
    print("\n".join(report.verdicts(results, PrioritySettings().policy)))
    if plot_path is not None:
        print(f"plot: {plot(results, plot_path)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        show(json.loads(args.report_only.read_text()), args.plot)
        return 0
    start = time.monotonic()
    install()
    print(f"Dynamo ready in {time.monotonic() - start:.0f} s", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="dynamo-bench-"))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    worker_env = {"WORKER_LEARNER__SEMANTICS": args.semantics} if args.semantics else {}
    try:
        with broker(args.bootstrap_servers) as bootstrap, DynamoStack(workdir) as dynamo:
            dynamo.start()
            if args.probe_only:
                added = asyncio.run(probe_only(args, dynamo, bootstrap, workdir))
                print("\n".join(hop.lines(added)))
                return 0
            topics = asyncio.run(new_topics(bootstrap, "dynamo-bench", 4))
            worker_args = [x for item in args.worker_set for x in ("--set", item)]
            worker = WorkerProcess(bootstrap, topics, base_env={}, env=worker_env, args=worker_args)
            worker.start().wait_ready(120)
            try:
                results = asyncio.run(bench(args, dynamo, bootstrap, topics, workdir))
            finally:
                worker.close()
        args.results.write_text(json.dumps(results))
        show(results, args.plot)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
