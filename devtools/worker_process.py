"""`python -m worker run` as a subprocess against a real broker: the tests' and benchmarks'.


    w = WorkerProcess(broker.bootstrap, topics=TopicNames.unique("t1")).start()
    w.wait_ready()
    ...
    w.stop()          # SIGTERM, asserts a clean exit 0
    w.kill()          # SIGKILL (crash)
    w.restart()       # same settings (same state dir) again

plus `produce`, `read_all` / `read_latest` (a topic read to its end), `expected_outputs` (the
learner core on the same input, as replay computes it) and `assert_outputs_match`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
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
from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from devtools.compare import assert_agent_matches
from devtools.kafka_broker import free_port
from worker.errors import ExitCode
from worker.kafka.reading import new_reader, read_to_end, wait_for_topics
from worker.learner import Fleet, LearnerConfig
from worker.models import parse_run

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
#: worker logs outlive the worker and its state dir, for a failing test to show
LOG_DIR = Path(tempfile.gettempdir())
#: settings the tests run workers with: fewer partitions
TEST_ENV = {"WORKER_TOPICS__PARTITIONS": "4"}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {'name{label="v"}': value} (labels sorted), plus bare names."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies (Linux), so no worker outlives it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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

    def settings(self) -> dict[str, str]:
        """The `topics` settings section naming these topics."""
        return {"runs": self.runs, "hints": self.hints, "tries": self.tries, "dlq": self.dlq}

    def env(self) -> dict[str, str]:
        return {f"WORKER_TOPICS__{name.upper()}": topic for name, topic in self.settings().items()}


@dataclass
class WorkerProcess:
    """One worker subprocess; logs go to a file (`log_text()`).

    `base_env` then `env` set WORKER_* settings (nothing of the caller's WORKER_* environment
    leaks in; benchmarks pass `base_env={}` for the product defaults); `cpus` pins it,
    `profile` runs it under cProfile."""

    bootstrap: str
    topics: TopicNames
    group_id: str = field(default_factory=lambda: f"g-{uuid.uuid4().hex[:8]}")
    state_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="worker-state-")))
    metrics_port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=lambda: dict(TEST_ENV))
    args: list[str] = field(default_factory=list)
    cpus: set[int] | None = None
    profile: Path | None = None
    #: the executable that runs `-m worker run` (a wrapper such as read_only_root.sh too)
    python: str = PYTHON
    #: the checkout whose `worker` package runs (`-m` imports from the working directory):
    #: another one to measure its worker side by side with this one's (`for_repo`)
    cwd: Path = REPO_ROOT
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0
    restarts_asked: int = 0
    _tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def start(self) -> WorkerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log_path = LOG_DIR / f"{self.state_dir.name}.{self._tag}.{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        env.update(self.topics.env())
        env.update(self.base_env)
        env.update(self.env)
        profiler = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        cmd = [
            self.python, *profiler, "-m", "worker", "run",
            "--bootstrap-servers", self.bootstrap,
            "--group-id", self.group_id,
            "--state-dir", str(self.state_dir),
            "--metrics-port", str(self.metrics_port),
            "--metrics-host", "127.0.0.1",
            *self.args,
        ]  # fmt: skip
        cpus = self.cpus

        def before_exec() -> None:
            _die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)

        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=before_exec,
            )
        return self

    restart = start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise with the log tail if the worker exited."""
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc else None
            raise AssertionError(f"the worker exited ({code}); log:\n{self.log_tail()}")

    def get(self, path: str) -> str | None:
        """The body of a 200 answer at `path`, else None."""
        status, text = self._get(path)
        return text if status == 200 else None

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

    def health(self) -> str:
        """What `/healthz` says now (its status and detail), for a bench that stalled."""
        status, text = self._get("/healthz")
        return f"{status} {text.strip()[:300]}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for(self.is_ready, "/readyz to return 200", timeout)

    def wait_for(
        self, condition: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.2
    ) -> Any:
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
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}:\n" + self.log_text()[-4000:])

    def metrics(self) -> dict[str, float]:
        """Samples as {'name{label="v"}': value} (labels sorted), plus bare names."""
        status, text = self._get("/metrics")
        assert status == 200, f"/metrics returned {status}: {text[:200]}"
        return parse_metrics(text)

    def run_to_exit(self, timeout: float = 60.0) -> int:
        """Start a worker expected to exit on its own (refusing to start); its exit code."""
        self.start()
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

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

        The worker exits with ExitCode.RESTART, without committing, when the consumer skipped
        records. Returns True when it was restarted."""
        if self.proc is not None and self.proc.poll() == ExitCode.RESTART:
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


async def produce_paced(
    bootstrap: str, topic: str, key: bytes, values: list[bytes], per_second: float
) -> None:
    """Send `values` under one `key` at `per_second`, each acknowledged, as a live agent would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        began = time.monotonic()
        for i, value in enumerate(values):
            await asyncio.sleep(max(0.0, began + i / per_second - time.monotonic()))
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str, topic: str, timeout: float = 30.0, **client: Any
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` from the beginning to its current end (waits for the topic)."""
    kwargs = {"bootstrap_servers": bootstrap, **client}
    partitions = await wait_for_topics(kwargs, topic, timeout_s=timeout)
    consumer = new_reader(kwargs)
    await consumer.start()
    try:
        return [record async for record in read_to_end(consumer, partitions, timeout)]
    finally:
        await consumer.stop()


def read_latest(bootstrap: str, topic: str, **client: Any) -> dict[str, dict[str, Any]]:
    """The last JSON value per key (agent id) of a compacted output topic."""
    latest: dict[str, dict[str, Any]] = {}
    for record in run_sync(read_all(bootstrap, topic, **client)):
        if record.key is None:
            continue
        if record.value is None:
            latest.pop(record.key.decode(), None)
        else:
            latest[record.key.decode()] = orjson.loads(record.value)
    return latest


# --- expected outputs --------------------------------------------------------------------------


def expected_outputs(runs: Iterable[dict[str, Any]], semantics: str = "corrected", **learner: Any):
    """{agent_id: {"agent_id", "hints", "trie", "runs", "accuracy"}} as replay computes them."""
    fleet = Fleet(LearnerConfig(semantics=semantics, **learner))
    for run in runs:
        fleet.learn(parse_run(orjson.dumps(run)))
    return {
        agent_id: {
            "agent_id": agent_id,
            "hints": hints.model_dump(mode="json") if hints is not None else None,
            "trie": trie.model_dump(mode="json"),
            "runs": fleet.states[agent_id].runs,
            "accuracy": fleet.states[agent_id].recent.summary(),
        }
        for agent_id, hints, trie in fleet.outputs()
    }


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
    bootstrap: str,
    topics: TopicNames,
    expected: dict[str, Any],
    *,
    accuracy: bool = False,
    **client: Any,
) -> None:
    """Final hints and tries equal the expected ones (SPEC section 7 comparison); with
    `accuracy`, each agent's recent accuracy too. Scores depend on the order an agent's runs
    are learned in, so only inputs the worker learns in their own order (keyed by agent id,
    nothing rekeyed) can expect replay's accuracy."""
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
            if accuracy:
                got_accuracy = record.get("accuracy")
                assert got_accuracy == want["accuracy"], f"{agent_id}: accuracy {got_accuracy}"
        got = {
            "agent_id": agent_id,
            "hints": record["hints"] if record else None,
            "trie": tries[agent_id],
        }
        assert_agent_matches(got, want)
