"""Recorder benchmark: what recording costs the agent (`make bench-recorder`).

Two figures, each the median of several rounds:
- runs/s recorded from one thread, runs of 6 LLM calls with usage (the enqueue path: build,
  encode and hand over each run; target >= 20,000 runs/s);
- the overhead of one LLM call: (time of a run with 100 calls - time of a run with none)
  / 100, so it includes the call's share of encoding (target <= 20 us).

The recorder is the real one, background thread and spool included: by default its broker
address is a loopback port nobody listens on, so the sender writes every run to the spool
(fsync'ed) while the agent thread records, the worst case for the agent; `--bootstrap`
points it at a real broker instead, and then also measures how fast the runs left unsent
drain to the broker once the agent thread idles. Figures on a shared machine are noisy;
compare medians.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from worker.recorder import RunRecorder

RUNS_TARGET = 20_000  # runs/s
CALL_TARGET_US = 20.0


def dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def record_runs(recorder: RunRecorder, runs: int, calls: int) -> float:
    """Seconds to record `runs` runs of `calls` LLM calls each, from this thread."""
    started = time.perf_counter()
    for _ in range(runs):
        with recorder.run("bench-agent") as run:
            for i in range(calls):
                with run.llm_call("planner", model_name="model-a") as call:
                    call.set_usage(output_tokens=120 + i, prompt_tokens=30, total_tokens=150 + i)
    return time.perf_counter() - started


def median_of(rounds: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    values = [measure() for _ in range(rounds)]
    return statistics.median(values), values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000, help="runs per throughput round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bootstrap", help="a real broker (default: none reachable)")
    parser.add_argument("--topic", default="agent-runs-bench")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # "cannot connect" on every retry

    spool_dir = tempfile.mkdtemp(prefix="recorder-bench-")
    recorder = RunRecorder(
        args.bootstrap or dead_address(), spool_dir, topic=args.topic, registry=None,
        max_spool_bytes=4 << 30, close_at_exit=None,
    )  # fmt: skip
    try:
        record_runs(recorder, 2000, 6)  # warm up (caches, allocator)
        run_seconds, run_rounds = median_of(
            args.rounds, lambda: record_runs(recorder, args.runs, 6) / args.runs
        )
        calls = 100

        def per_call() -> float:
            with_calls = record_runs(recorder, 500, calls)
            without = record_runs(recorder, 500, 0)
            return (with_calls - without) / (500 * calls)

        call_seconds, call_rounds = median_of(args.rounds, per_call)
        stats = recorder.stats()
        drain = None
        if args.bootstrap:  # the agent thread now idles: how fast does the backlog drain?
            started = time.perf_counter()
            if recorder.flush(timeout=600):
                drain = stats.pending_runs / (time.perf_counter() - started)
    finally:
        recorder.close(timeout=5 if args.bootstrap else 0.5)
        shutil.rmtree(spool_dir, ignore_errors=True)

    runs_per_s = 1 / run_seconds
    call_us = call_seconds * 1e6
    where = f"broker {args.bootstrap}" if args.bootstrap else "no broker: every run spooled"
    print(f"recorder ({where}; {args.rounds} rounds, median):")
    print(
        f"  record runs of 6 LLM calls, one thread: {runs_per_s:,.0f} runs/s "
        f"({run_seconds * 1e6:.1f} us/run; rounds "
        + ", ".join(f"{1 / s:,.0f}" for s in run_rounds)
        + f") target >= {RUNS_TARGET:,}: {'met' if runs_per_s >= RUNS_TARGET else 'NOT met'}"
    )
    print(
        f"  overhead per LLM call: {call_us:.2f} us (rounds "
        + ", ".join(f"{s * 1e6:.2f}" for s in call_rounds)
        + f") target <= {CALL_TARGET_US:.0f} us: "
        + ("met" if call_us <= CALL_TARGET_US else "NOT met")
    )
    print(
        f"  unsent when the recording stopped: {stats.pending_runs:,} runs (the sender gets "
        "little of the GIL while a thread records flat out)"
    )
    if drain is not None:
        print(f"  then spooled and acknowledged by the broker at {drain:,.0f} runs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
