"""Where a worker's own CPU goes per run at a fleet's scale, in one process (no Kafka, no
faust): each record through the processor (parse, read or decode the agent, score and
learn), the state writes of each commit, the hints of each hints cycle and the tries of
each tries cycle, at the cadences a worker taking `--rate` runs/s has (hints every 100 ms,
commits every 1 s, tries every 5 s). The figures are CPU time of this process, so they
hold on a busy machine better than wall-clock ones; compare runs side by side anyway.

Run: `python -m benchmarks.fleet_cpu [--agents 10000] [--runs 40000] [--profile]`.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from worker.demo_workload import FLEET_ZIPF, generate_runs
from worker.learner import LearnerConfig, state_hints, trie_dict
from worker.learner.limits import Limits
from worker.models import dumps
from worker.stream.processor import Processor
from worker.stream.publish_queue import PublishQueue
from worker.stream.state.entry import AgentEntry
from worker.stream.state.store import StateStore

PARTS = ("process", "write", "hints", "tries")


class _MemoryTable:
    """The state table as a dict: a record is in the "local store" as soon as it is sent."""

    applied = True  # what `put` returns is its own, already applied, receipt

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> _MemoryTable:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        return self


class FleetCpu:
    """The worker's own work on `runs`, timed per part."""

    def __init__(self, runs: list[bytes], rate: int, config: LearnerConfig) -> None:
        self.runs = runs
        self.config = config
        self.hints_every, self.commit_every, self.tries_every = rate // 10, rate, rate * 5
        self.store = StateStore(_MemoryTable(), max_bytes=1 << 30)
        self.queue = PublishQueue(self.store.cache)
        self.processor = Processor(self.store, self.queue, config, Limits(), 1)
        self.due: dict[str, AgentEntry] = {}
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.builds = {"hints": 0, "tries": 0}

    def run(self) -> None:
        for number, value in enumerate(self.runs, 1):
            self._timed("process", lambda v=value: self.processor.process(v, 0, None))
            if number % self.hints_every == 0:
                self._timed("hints", self._hints)
            if number % self.commit_every == 0:
                self._timed("write", self._commit)
            if number % self.tries_every == 0:
                self._timed("tries", self._tries)
        self._timed("hints", self._hints)
        self._timed("write", self._commit)
        self._timed("tries", self._tries)

    def _timed(self, part: str, work: Callable[[], Any]) -> None:
        began = time.process_time()
        work()
        self.seconds[part] += time.process_time() - began

    def _hints(self) -> None:
        store, config = self.store, self.config
        for change in self.queue.take():
            state = store.state(change.entry)
            hints = state_hints(state, config)
            if hints is not None:
                record = {"agent_id": change.agent_id, "hints": hints, "runs": state.runs}
                accuracy = state.recent.summary()
                if accuracy is not None:
                    record["accuracy"] = accuracy
                dumps(record)
            self.due[change.agent_id] = change.entry
            self.builds["hints"] += 1

    def _commit(self) -> None:
        self.store.write_all()
        self.store.acknowledged()

    def _tries(self) -> None:
        for agent_id, entry in self.due.items():
            dumps(trie_dict(agent_id, self.store.state(entry), self.config))
            self.builds["tries"] += 1
        self.due.clear()

    def report(self) -> str:
        count = len(self.runs)
        total = sum(self.seconds.values()) / count * 1e6
        parts = ", ".join(f"{part} {self.seconds[part] / count * 1e6:.0f}" for part in PARTS)
        builds = ", ".join(f"{name} {n / count:.2f}" for name, n in self.builds.items())
        return f"{total:.0f} us CPU per run ({parts}); builds per run: {builds}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_cpu", description=__doc__)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=40_000)
    parser.add_argument("--rate", type=int, default=5_000, help="runs/s the cadences assume")
    parser.add_argument("--semantics", default="corrected")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    args = parser.parse_args(argv)
    zipf = FLEET_ZIPF if args.agents > 100 else 0.0
    runs = [
        orjson.dumps(r) for r in generate_runs(args.runs, args.agents, seed=args.seed, zipf=zipf)
    ]
    gc.freeze()  # as the worker tunes its GC after start-up (commands/run.py)
    gc.set_threshold(10_000, 50, 100)
    bench = FleetCpu(runs, args.rate, LearnerConfig(semantics=args.semantics))
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(bench.run)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    else:
        bench.run()
    print(f"{args.agents:,} agents, {args.runs:,} runs ({args.semantics}): {bench.report()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
