"""Fault injection (issue 5): no run lost or doubled through crashes, rebalances, a lost disk
and a broker restart.

Every scenario streams runs from a background thread while the fault happens: runs keyed
right, not keyed or keyed with another agent (re-routed via the rekey topic), some sent twice
(producer retries), plus a few bad records. At the end the latest `agent-hints` and
`agent-tries` must equal what replay computes from the same runs (counts exact, SPEC 7) and
the DLQ must hold exactly the bad records, each once.

Sizes: a short variant by default (all four scenarios in a few minutes, part of `make test`);
`WORKER_FAULTS_FULL=1` (`make test-faults`) runs the sizes of the issue: 20,000 runs and
at least five `kill -9` in the crash scenario. `WORKER_FAULTS_GUARANTEE=exactly_once` runs
the workers with faust's transactions instead of the default at_least_once.
`WORKER_FAULTS_SEMANTICS=adaptive` runs them under the adaptive rule set, whose outputs depend
on the order each agent's runs are learned in (decay, hysteresis): every run is then keyed by
its agent id, duplicates too, so the worker learns each agent's runs in the input's order
(re-routing is the corrected runs' to exercise).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from devtools.worker_process import (
    TopicNames,
    WorkerProcess,
    assert_outputs_match,
    expected_outputs,
    outputs_complete,
    read_all,
    read_latest,
    run_sync,
)
from worker.demo_workload import generate_runs

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FULL = os.environ.get("WORKER_FAULTS_FULL", "") not in ("", "0", "false", "no")
SEMANTICS = os.environ.get("WORKER_FAULTS_SEMANTICS", "corrected")
#: the learning rules depend on each agent's order of runs: keep it (no re-routed records)
ORDERED = SEMANTICS == "adaptive"
PARTITIONS = 4


@dataclass(frozen=True)
class Size:
    runs: int
    agents: int
    #: seconds the feeder spreads the input over (the faults happen meanwhile)
    feed_s: float
    kills: int = 0


SIZES = {
    "crash": Size(20_000, 300, 75.0, kills=6) if FULL else Size(3_000, 60, 20.0, kills=3),
    "rebalance": Size(10_000, 200, 60.0) if FULL else Size(2_500, 50, 25.0),
    "lost_disk": Size(10_000, 200, 40.0) if FULL else Size(2_500, 50, 14.0),
    "broker": Size(10_000, 200, 45.0) if FULL else Size(2_000, 40, 22.0),
}

#: worker settings for all scenarios: short sessions, so a killed worker's partitions move on
#: quickly (the test broker allows group.min.session.timeout.ms = 1 s)
WORKER_ENV = {
    "WORKER_SESSION_TIMEOUT_S": "6",
    # WORKER_FAULTS_GUARANTEE=exactly_once runs the suite against faust's transactions
    "WORKER_PROCESSING_GUARANTEE": os.environ.get("WORKER_FAULTS_GUARANTEE", "at_least_once"),
    # WORKER_FAULTS_SEMANTICS=adaptive runs it under the adaptive rule set
    "WORKER_LEARNER__SEMANTICS": SEMANTICS,
    "WORKER_LOG_LEVEL": "INFO",
}


# --- input -------------------------------------------------------------------------------------


Record = tuple[bytes | None, bytes]


def make_input(size: Size, seed: int) -> tuple[list[dict[str, Any]], list[Record], list[bytes]]:
    """(runs in the order they are first sent, records to send in order, bad values).
    Records: mixed keys (all keyed by agent id when ORDERED), ~3% duplicates, one bad record
    per ~500 runs (at least 3), each bad value unique."""
    rng = random.Random(seed)
    runs = list(generate_runs(size.runs, size.agents, seed=seed))
    agents = sorted({r["agent_id"] for r in runs})
    records: list[Record] = []
    for run in runs:
        value = orjson.dumps(run)
        roll = 0.0 if ORDERED else rng.random()
        if roll < 0.6:
            key: bytes | None = run["agent_id"].encode()
        elif roll < 0.8:
            key = None
        else:
            key = rng.choice(agents).encode()
        records.append((key, value))
    for _ in range(max(10, size.runs // 30)):  # producer retries, possibly keyed otherwise
        key, value = records[rng.randrange(len(records))]
        at = rng.randrange(len(records))
        keys = [key] if ORDERED else [key, None, rng.choice(agents).encode()]
        records.insert(at, (rng.choice(keys), value))
    bad: list[bytes] = []
    for i in range(max(3, size.runs // 500)):
        kind = i % 3
        if kind == 0:
            value = b'{"id": "bad-%d", "agent_id": "not closed' % i
        elif kind == 1:
            value = orjson.dumps({"bad": i, "calls": []})  # schema: no id / agent_id
        else:
            value = orjson.dumps({**runs[i], "id": f"bad-{i}", "started_at": "yesterday"})
        bad.append(value)
        # not in the first or last 5%: bad records are consumed while faults happen
        at = rng.randrange(len(records) // 20, len(records) - len(records) // 20)
        records.insert(at, (rng.choice([None, rng.choice(agents).encode()]), value))
    good = {run["id"]: run for run in runs}
    first_sent = {}  # run id -> run, in the order records first carry it
    for _, value in records:
        run_id = orjson.loads(value).get("id") if value not in bad else None
        if run_id in good and run_id not in first_sent:
            first_sent[run_id] = good[run_id]
    return list(first_sent.values()), records, bad


class Feeder(threading.Thread):
    """Produces `records` in order, evenly over `duration` seconds, from its own thread.

    Idempotent producer with long timeouts: it rides out a broker restart without sending
    anything twice (a bad record sent twice would show up twice in the DLQ)."""

    def __init__(self, bootstrap: str, topic: str, records: list[Record], duration: float):
        super().__init__(name="feeder", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = records
        self.duration = duration
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._feed())
        except BaseException as exc:  # reported by finish()
            self.error = exc

    async def _feed(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=120_000,
            retry_backoff_ms=250,
        )
        await producer.start()
        try:
            chunks = max(1, int(self.duration * 10))
            per_chunk = max(1, -(-len(self.records) // chunks))
            started = time.monotonic()
            futures = []
            for n, i in enumerate(range(0, len(self.records), per_chunk)):
                for key, value in self.records[i : i + per_chunk]:
                    futures.append(await producer.send(self.topic, value, key=key))
                self.sent = min(len(self.records), i + per_chunk)
                delay = started + (n + 1) * self.duration / chunks - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    def finish(self, timeout: float = 180.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the feeder did not finish"
        if self.error is not None:
            raise AssertionError(f"feeding the input failed: {self.error!r}") from self.error


# --- checks ------------------------------------------------------------------------------------


def wait_until(
    condition, what: str, timeout: float, workers: list[WorkerProcess], explain=None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            w.supervise()
            if w.proc is not None and w.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited ({w.proc.returncode}) while waiting for {what}:\n"
                    + w.log_text()[-4000:]
                )
        if condition():
            return
        time.sleep(1.0)
    logs = "\n".join(f"--- {w.log_path}\n{w.log_text()[-3000:]}" for w in workers)
    why = explain() if explain is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{why}\n{logs}")


def worker_figures(workers: list[WorkerProcess]) -> str:
    lines = []
    for w in workers:
        try:
            m = w.metrics()
        except AssertionError as exc:
            lines.append(f"{w.log_path}: {exc}")
            continue
        keep = {
            k: v
            for k, v in m.items()
            if (k.startswith("agent_hints_runs") and "_total" in k and v) or ("lag" in k and v)
        }
        lines.append(f"{w.log_path}: {keep}")
    return "\n" + "\n".join(lines)


def count_diff(bootstrap: str, topics: TopicNames, expected: dict[str, Any]) -> str:
    """Which agents' published run counts differ from the expected ones."""
    hints = read_latest(bootstrap, topics.hints)
    diff = {
        agent: (hints.get(agent, {}).get("runs"), want["runs"])
        for agent, want in expected.items()
        if want["hints"] is not None and hints.get(agent, {}).get("runs") != want["runs"]
    }
    return f"\n(published, expected) runs of {len(diff)} agents: {dict(list(diff.items())[:20])}"


def no_lag(workers: list[WorkerProcess]) -> bool:
    for w in workers:
        if not w.is_ready():
            return False
        m = w.metrics()
        if sum(v for k, v in m.items() if k.startswith("agent_hints_consumer_lag_records")) > 0:
            return False
    return True


def check_outputs(
    bootstrap: str,
    topics: TopicNames,
    runs: list[dict[str, Any]],
    bad: list[bytes],
    live: list[WorkerProcess],
    timeout: float = 240.0,
) -> None:
    """Wait for every run to show in the hints, then compare hints, tries and the DLQ."""
    expected = expected_outputs(runs, semantics=SEMANTICS)

    def dead_letters() -> list[Any]:
        return run_sync(read_all(bootstrap, topics.dlq))

    wait_until(
        lambda: outputs_complete(bootstrap, topics, expected),
        f"hints of all {len(expected)} agents with every run",
        timeout,
        live,
        explain=lambda: count_diff(bootstrap, topics, expected) + worker_figures(live),
    )
    wait_until(lambda: len(dead_letters()) >= len(bad), "the bad records in the DLQ", 60, live)
    wait_until(lambda: no_lag(live), "the workers to reach the end of the input", 60, live)
    time.sleep(1.5)  # anything still in flight (a doubled publish, a late DLQ record) lands
    assert_outputs_match(bootstrap, topics, expected)
    dlq = collections.Counter(r.value for r in dead_letters())
    assert dlq == collections.Counter(bad), (
        f"DLQ: {sum(dlq.values())} records, {len(bad)} bad sent; doubled: "
        f"{[v[:40] for v, n in dlq.items() if n > 1]}, unexpected: "
        f"{[v[:40] for v in dlq if v not in set(bad)]}"
    )


def setup(kafka_broker, name: str, seed: int):
    size = SIZES[name]
    runs, records, bad = make_input(size, seed)
    topics = TopicNames.unique(f"f{name[:4]}")
    kafka_broker.create_topic(topics.runs, partitions=PARTITIONS)
    feeder = Feeder(kafka_broker.bootstrap, topics.runs, records, size.feed_s)
    return size, runs, records, bad, topics, feeder


def new_worker(kafka_broker, topics: TopicNames, workers: list[WorkerProcess], **kw: Any):
    w = WorkerProcess(kafka_broker.bootstrap, topics, env={**WORKER_ENV, **kw.pop("env", {})}, **kw)
    workers.append(w)
    return w


def ready(worker: WorkerProcess, timeout: float = 120.0) -> None:
    """wait_ready, restarting the worker when it exits asking for a restart."""
    wait_until(worker.is_ready, "/readyz", timeout, [worker])


def report(name: str, began: float, **figures: Any) -> None:
    extra = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[faults] {name}: {time.monotonic() - began:.1f}s {extra}")


# --- scenarios ---------------------------------------------------------------------------------


def test_crash_kill_9_repeatedly(kafka_broker, workers) -> None:
    """`kill -9` at random moments (also during start-up and recovery), restart each time."""
    began = time.monotonic()
    size, runs, records, bad, topics, feeder = setup(kafka_broker, "crash", seed=101)
    worker = new_worker(kafka_broker, topics, workers)
    worker.start().wait_ready(90)
    feeder.start()
    rng = random.Random(5)
    kills_at: list[int] = []
    for _ in range(size.kills):
        time.sleep(rng.uniform(1.0, max(1.5, 0.8 * size.feed_s / size.kills)))
        kills_at.append(feeder.sent)
        worker.kill()
        worker.restart()
    ready(worker)
    feeder.finish()
    check_outputs(kafka_broker.bootstrap, topics, runs, bad, [worker])
    assert worker.stop() == 0
    report("crash", began, runs=len(runs), records=len(records), kills=len(kills_at),
           killed_after_sent=kills_at, restarts_asked=worker.restarts_asked)  # fmt: skip


def test_lost_disk_rebuilds_from_changelog(kafka_broker, workers) -> None:
    """Crash, delete the RocksDB directory, restart: state comes back from the changelog."""
    began = time.monotonic()
    _, runs, _, bad, topics, feeder = setup(kafka_broker, "lost_disk", seed=202)
    worker = new_worker(kafka_broker, topics, workers)
    worker.start().wait_ready(90)
    feeder.start()
    worker.wait_for(
        lambda: worker.metrics().get("agent_hints_runs_learned_total", 0) >= len(runs) // 2,
        "half of the runs learned",
        timeout=120,
    )
    worker.kill()
    shutil.rmtree(worker.state_dir)
    rebuild_began = time.monotonic()
    worker.restart()
    ready(worker)
    rebuilt_in = time.monotonic() - rebuild_began
    assert worker.state_dir.exists(), "the worker recreated its state directory"
    feeder.finish()
    check_outputs(kafka_broker.bootstrap, topics, runs, bad, [worker])
    assert worker.stop() == 0
    report(
        "lost_disk",
        began,
        runs=len(runs),
        ready_after_restart_s=round(rebuilt_in, 1),
        restarts_asked=worker.restarts_asked,
    )


def test_rebalance_join_and_leave(kafka_broker, workers) -> None:
    """Two workers in one group; a third joins and one of the first two leaves mid-stream."""
    began = time.monotonic()
    size, runs, _, bad, topics, feeder = setup(kafka_broker, "rebalance", seed=303)
    first = new_worker(kafka_broker, topics, workers)
    second = new_worker(kafka_broker, topics, workers, group_id=first.group_id)
    first.start()
    second.start()
    first.wait_ready(90)
    second.wait_ready(90)
    feeder.start()
    time.sleep(size.feed_s * 0.25)
    third = new_worker(kafka_broker, topics, workers, group_id=first.group_id)
    third.start()
    ready(third)
    time.sleep(size.feed_s * 0.2)
    assert first.stop() == 0  # leaves the group cleanly mid-stream
    ready(second)
    ready(third)
    feeder.finish()
    check_outputs(kafka_broker.bootstrap, topics, runs, bad, [second, third])
    learned = sum(
        w.metrics()["agent_hints_runs_learned_total"] for w in (second, third)
    )  # what the survivors learned (the first one's share went away with it)
    assert second.stop() == 0
    assert third.stop() == 0
    report("rebalance", began, runs=len(runs), learned_by_survivors=int(learned))


def test_broker_restart(kafka_broker, workers) -> None:
    """The broker stops for ten seconds mid-stream and comes back; the worker rides it out."""
    began = time.monotonic()
    size, runs, _, bad, topics, feeder = setup(kafka_broker, "broker", seed=404)
    worker = new_worker(kafka_broker, topics, workers)
    worker.start().wait_ready(90)
    feeder.start()
    time.sleep(size.feed_s * 0.3)
    sent_at_stop = feeder.sent
    kafka_broker.stop()
    try:
        time.sleep(10)
    finally:
        kafka_broker.start()
    feeder.finish()
    check_outputs(kafka_broker.bootstrap, topics, runs, bad, [worker])
    assert worker.proc is not None and worker.proc.poll() is None, "the worker kept running"
    assert worker.stop() == 0
    report("broker", began, runs=len(runs), sent_at_stop=sent_at_stop)
