"""`produce-demo` and `inspect` against the real broker, run as the CLI a user would run."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devtools.vectors import VECTORS
from worker.models import parse_run

ROOT = Path(__file__).resolve().parents[2]
BASIC = VECTORS / "basic.expected.jsonl"
COMPACT = {"cleanup.policy": "compact"}


def cli(*args: str, bootstrap: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m worker ARGS` with the broker in WORKER_BOOTSTRAP_SERVERS."""
    env = {**os.environ, "WORKER_BOOTSTRAP_SERVERS": bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def _consume_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(records) < expected and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def _publish(bootstrap: str, topic: str, items: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


def test_produce_demo_sends_valid_runs_keyed_by_agent(kafka_broker: Any, topic_name: str) -> None:
    kafka_broker.create_topic(topic_name, partitions=4)
    result = cli(
        "produce-demo", "--topic", topic_name, "--count", "40", "--agents", "3",
        "--rate", "0", "--seed", "5", bootstrap=kafka_broker.bootstrap,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "produced 40 runs" in result.stdout
    records = asyncio.run(_consume_all(kafka_broker.bootstrap, topic_name, 40))
    assert len(records) == 40
    runs = [parse_run(record.value) for record in records]
    assert all(
        record.key.decode() == run.agent_id for record, run in zip(records, runs, strict=True)
    )
    assert {run.agent_id for run in runs} == {"agent-0000", "agent-0001", "agent-0002"}
    assert len({run.id for run in runs}) == 40
    # one agent's runs all land in one partition (keyed), so the worker sees them in order
    partitions: dict[str, set[int]] = {}
    for record, run in zip(records, runs, strict=True):
        partitions.setdefault(run.agent_id, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())


def test_produce_demo_paces_to_the_rate(kafka_broker: Any, topic_name: str) -> None:
    kafka_broker.create_topic(topic_name)
    start = time.monotonic()
    result = cli(
        "produce-demo", "--topic", topic_name, "--count", "30", "--rate", "20",
        bootstrap=kafka_broker.bootstrap,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start >= 1.4  # 30 runs at 20/s: the last one is due at 1.45 s


def test_produce_demo_creates_the_worker_topics(kafka_broker: Any, topic_name: str) -> None:
    names = ["--topic", topic_name, "--hints-topic", f"{topic_name}-h"]
    names += ["--tries-topic", f"{topic_name}-t"]
    result = cli(
        "produce-demo", "--create-topics", "--count", "0", "--partitions", "3", *names,
        bootstrap=kafka_broker.bootstrap,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{topic_name}-h" in result.stdout
    again = cli(
        "produce-demo", "--create-topics", "--count", "0", *names,
        bootstrap=kafka_broker.bootstrap,
    )  # fmt: skip
    assert "none (all exist)" in again.stdout


def _vector(agent: str) -> dict[str, Any]:
    assert BASIC.exists(), f"{BASIC} not found: the test vectors are part of the repository"
    rows = [json.loads(line) for line in BASIC.read_text().splitlines() if line.strip()]
    return next(row for row in rows if row["agent_id"] == agent)


def test_inspect_shows_the_latest_hints_and_trie(kafka_broker: Any, topic_name: str) -> None:
    hints_topic = kafka_broker.create_topic(f"{topic_name}-h", partitions=3, config=COMPACT)
    tries_topic = kafka_broker.create_topic(f"{topic_name}-t", partitions=3, config=COMPACT)
    row = _vector("planner")
    old = dict(row["hints"], osl=1)

    def hints(runs: int, values: dict[str, Any]) -> bytes:
        record = {"agent_id": "planner", "hints": values, "runs": runs, "updated_at": "T"}
        return json.dumps(record).encode()

    envelope = dict(row["trie"], workflow_name="planner")
    other = {"agent_id": "other", "hints": row["hints"], "runs": 9, "updated_at": "T"}
    versions = [
        ("planner", hints(1, old)),
        ("other", json.dumps(other).encode()),
        ("planner", hints(3, row["hints"])),
    ]
    asyncio.run(_publish(kafka_broker.bootstrap, hints_topic, versions))
    trie = [("planner", json.dumps(envelope).encode())]
    asyncio.run(_publish(kafka_broker.bootstrap, tries_topic, trie))
    flags = ["--hints-topic", hints_topic, "--tries-topic", tries_topic]

    shown = cli("inspect", "planner", *flags, bootstrap=kafka_broker.bootstrap)
    assert shown.returncode == 0, shown.stderr
    assert "osl=360 iat=760 priority=2" in shown.stdout  # the latest value, not osl=1
    assert "learned from 3 runs" in shown.stdout
    assert "├── critic" in shown.stdout and "└── gpt-4" in shown.stdout

    raw = cli("inspect", "planner", "--json", *flags, bootstrap=kafka_broker.bootstrap)
    assert raw.returncode == 0, raw.stderr
    payload = json.loads(raw.stdout)
    assert payload["hints"]["runs"] == 3
    assert payload["trie"]["root"]["children"].keys() == {"critic", "gpt-4"}

    unknown = cli("inspect", "nobody", *flags, bootstrap=kafka_broker.bootstrap)
    assert unknown.returncode == 1
    assert "unknown agent 'nobody'" in unknown.stderr


def test_inspect_reports_a_missing_topic(kafka_broker: Any, topic_name: str) -> None:
    result = cli(
        "inspect", "x", "--hints-topic", f"{topic_name}-absent", bootstrap=kafka_broker.bootstrap
    )
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_produce_demo_follow_and_inspect_with_a_real_worker(kafka_broker: Any) -> None:
    """produce-demo -> worker -> follow sees every run; inspect shows what replay computes."""
    from devtools.worker_process import TopicNames, WorkerProcess, expected_outputs
    from worker.demo_workload import generate_runs

    topics = TopicNames.unique("demo")
    worker = WorkerProcess(kafka_broker.bootstrap, topics).start()
    try:
        worker.wait_ready()
        flags = ["--topic", topics.runs, "--hints-topic", topics.hints]
        flags += ["--tries-topic", topics.tries]
        produced = cli(
            "produce-demo", *flags, "--count", "40", "--agents", "3", "--rate", "0",
            "--seed", "3", "--follow", "--follow-timeout", "60",
            bootstrap=kafka_broker.bootstrap,
        )  # fmt: skip
        assert produced.returncode == 0, produced.stderr + worker.log_text()[-3000:]
        expected = expected_outputs(generate_runs(40, 3, seed=3))
        summary = produced.stdout.split("final hints per agent:", 1)[1]
        for agent, want in expected.items():
            hints = want["hints"]
            line = f"{agent:<12} runs={want['runs']:<5} osl={hints['osl']} iat={hints['iat']}"
            assert line in summary
        # the follow output printed changes as they happened, ending at the final counts
        changes = [line for line in produced.stdout.splitlines() if line.startswith("agent-0000")]
        assert changes and f"runs={expected['agent-0000']['runs']} " in changes[-1]

        flags = ["--hints-topic", topics.hints, "--tries-topic", topics.tries]
        raw = cli("inspect", "agent-0000", "--json", *flags, bootstrap=kafka_broker.bootstrap)
        assert raw.returncode == 0, raw.stderr
        payload = json.loads(raw.stdout)
        assert payload["hints"]["hints"] == expected["agent-0000"]["hints"]
        assert payload["hints"]["runs"] == expected["agent-0000"]["runs"]

        shown = cli("inspect", "agent-0000", *flags, bootstrap=kafka_broker.bootstrap)
        assert shown.returncode == 0, shown.stderr
        for name in expected["agent-0000"]["trie"]["root"]["children"]:
            assert f"── {name}\n" in shown.stdout
    finally:
        worker.close()
