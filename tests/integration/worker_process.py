"""Helpers to run `python -m worker run` as a subprocess against the test broker.

Reusable by the fault-injection suite:

    w = WorkerProcess(broker.bootstrap, topics=TopicNames.unique("t1")).start()
    w.wait_ready()
    ...
    w.stop()          # SIGTERM, asserts a clean exit 0
    w.kill()          # SIGKILL (crash)
    w.restart()       # same settings (same state dir) again

plus `produce`, `read_latest` (a topic read to its end, last value per key), `expected_outputs`
(the learner core on the same input, as replay computes it) and `assert_outputs_match`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]
#: worker.stream.app.EXIT_SKIPPED: "restart me", nothing lost
EXIT_SKIPPED = 75
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class TopicNames:
    runs: str
    hints: str
    tries: str
    dlq: str

    @classmethod
    def unique(cls, prefix: str = "w") -> TopicNames:
        tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return cls(f"{tag}-agent-runs", f"{tag}-agent-hints", f"{tag}-agent-tries", f"{tag}-dlq")

    def env(self) -> dict[str, str]:
        return {
            "WORKER_TOPICS__RUNS": self.runs,
            "WORKER_TOPICS__HINTS": self.hints,
            "WORKER_TOPICS__TRIES": self.tries,
            "WORKER_TOPICS__DLQ": self.dlq,
        }


@dataclass
class WorkerProcess:
    """One worker subprocess; logs go to a file (`log_text()`)."""

    bootstrap: str
    topics: TopicNames
    group_id: str = field(default_factory=lambda: f"g-{uuid.uuid4().hex[:8]}")
    state_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="worker-state-")))
    metrics_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0
    restarts_asked: int = 0

    def start(self) -> WorkerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log_path = self.state_dir.with_name(f"{self.state_dir.name}.{self.starts}.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        env.update(self.topics.env())
        env.update({"WORKER_PUBLISH_INTERVAL_MS": "100", "WORKER_TOPICS__PARTITIONS": "4"})
        env.update(self.env)
        cmd = [
            PYTHON, "-m", "worker", "run",
            "--bootstrap-servers", self.bootstrap,
            "--group-id", self.group_id,
            "--state-dir", str(self.state_dir),
            "--metrics-port", str(self.metrics_port),
            "--metrics-host", "127.0.0.1",
            *self.args,
        ]  # fmt: skip
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    restart = start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urlopen(self.url + path, timeout=2) as response:
                return response.status, response.read().decode()
        except URLError as exc:
            status = getattr(exc, "code", None)
            if status is not None:
                return status, exc.read().decode()  # type: ignore[attr-defined]
            return 0, str(exc)
        except (ConnectionError, TimeoutError) as exc:
            return 0, str(exc)

    def is_ready(self) -> bool:
        return self._get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for(self.is_ready, "/readyz to return 200", timeout)

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.log_text()[-4000:]
                )
            result = condition()
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.log_text()[-4000:])

    def metrics(self) -> dict[str, float]:
        """Samples as {'name{label="v"}': value} (labels sorted), plus bare names."""
        status, text = self._get("/metrics")
        assert status == 200, f"/metrics returned {status}: {text[:200]}"
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send `sig` and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"worker did not stop within {timeout}s:\n{self.log_text()[-4000:]}"
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def supervise(self) -> bool:
        """Restart the worker if it exited asking for it (what Kubernetes or systemd would do).

        The worker exits with EXIT_SKIPPED, without committing, when the consumer skipped
        records. Returns True when it was restarted."""
        if self.proc is not None and self.proc.poll() == EXIT_SKIPPED:
            self.restarts_asked += 1
            self.start()
            return True
        return False

    def close(self) -> None:
        """Kill the worker if it still runs and delete its state directory (logs stay)."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.state_dir, ignore_errors=True)


# --- Kafka I/O ---------------------------------------------------------------------------------


def run_sync(coro: Any) -> Any:
    return asyncio.run(coro) if not _loop_running() else _in_thread(coro)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _in_thread(coro: Any) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


Record = tuple[bytes | None, bytes | None]  # (key, value)


async def produce(bootstrap: str, topic: str, records: Iterable[Record], **client: Any) -> int:
    """Send records (key, value) to `topic` in order; returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", **client)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


async def read_all(bootstrap: str, topic: str, timeout: float = 30.0, **client: Any) -> list[Any]:
    """Every record of `topic` from the beginning to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        **client,
    )  # fmt: skip
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while time.monotonic() < deadline:
            cluster = await consumer._client.fetch_all_metadata()
            partitions = cluster.partitions_for_topic(topic)
            if partitions:
                break
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or ())]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} to its end timed out")
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for items in batch.values():
                records.extend(items)
        return records
    finally:
        await consumer.stop()


def read_latest(bootstrap: str, topic: str, **client: Any) -> dict[str, dict[str, Any]]:
    """The last JSON value per key (agent id) of a compacted output topic."""
    latest: dict[str, dict[str, Any]] = {}
    for record in run_sync(read_all(bootstrap, topic, **client)):
        if record.value is not None:
            latest[record.key.decode()] = orjson.loads(record.value)
    return latest


# --- expected outputs --------------------------------------------------------------------------


def expected_outputs(runs: Iterable[dict[str, Any]], semantics: str = "corrected", **learner: Any):
    """{agent_id: {"agent_id", "hints", "trie", "runs"}} as replay computes them."""
    from worker.learner import AgentState, LearnerConfig, build_trie, default_hints
    from worker.records import parse_run

    config = LearnerConfig(semantics=semantics, **learner)
    states: dict[str, AgentState] = {}
    for run in runs:
        record = parse_run(orjson.dumps(run))
        states.setdefault(record.agent_id, AgentState()).learn(record, config)
    out = {}
    for agent_id, state in sorted(states.items()):
        trie = build_trie(agent_id, state, config)
        hints = default_hints(trie, config)
        out[agent_id] = {
            "agent_id": agent_id,
            "hints": hints.model_dump(mode="json") if hints is not None else None,
            "trie": trie.model_dump(mode="json"),
            "runs": state.runs,
        }
    return out


def _root_samples(trie: dict[str, Any]) -> int:
    root = trie["root"]["predictions_any_index"]
    return 0 if root is None else root["remaining_calls"]["sample_count"]


def outputs_complete(bootstrap: str, topics: TopicNames, expected: dict[str, Any], **client):
    """True once every agent's latest hints and trie include all its expected runs.

    Hints carry the run count; a trie (published on its own, slower cadence) is complete
    when its root has as many call samples as the expected trie's."""
    hints = read_latest(bootstrap, topics.hints, **client)
    tries = read_latest(bootstrap, topics.tries, **client)
    return all(
        (want["hints"] is None or (agent in hints and hints[agent]["runs"] == want["runs"]))
        and agent in tries
        and _root_samples(tries[agent]) == _root_samples(want["trie"])
        for agent, want in expected.items()
    )


def assert_outputs_match(
    bootstrap: str, topics: TopicNames, expected: dict[str, Any], **client: Any
) -> None:
    """Final hints and tries equal the expected ones (SPEC section 7 comparison)."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from compare import assert_agent_matches

    hints = read_latest(bootstrap, topics.hints, **client)
    tries = read_latest(bootstrap, topics.tries, **client)
    assert set(tries) == set(expected), f"agents in tries: {sorted(set(tries) ^ set(expected))}"
    for agent_id, want in expected.items():
        record = hints.get(agent_id)
        if want["hints"] is None:
            assert record is None, f"{agent_id}: unexpected hints {record}"
        else:
            assert record is not None, f"{agent_id}: no hints published"
            assert record["agent_id"] == agent_id
            assert record["runs"] == want["runs"], f"{agent_id}: runs {record['runs']}"
        got = {
            "agent_id": agent_id,
            "hints": record["hints"] if record else None,
            "trie": tries[agent_id],
        }
        assert_agent_matches(got, want)
