"""The recorder against the real broker (SPEC 9): keyed records on murmur2 partitions, SCRAM,
runs recorded while the broker is down surviving restarts of the recording process (clean
exit and SIGKILL) and of the broker, then counted exactly once by a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from aiokafka.partitioner import murmur2
from prometheus_client import CollectorRegistry

from devtools.worker_process import (
    REPO_ROOT,
    TopicNames,
    WorkerProcess,
    read_all,
    read_latest,
    run_sync,
)
from worker.models import parse_run
from worker.recorder import RunRecorder
from worker.recorder.spool import Spool
from worker.settings import KafkaSettings

RECORD_RUNS = Path(__file__).with_name("record_runs.py")
PARTITIONS = 4


def record(recorder: RunRecorder, agent: str, calls: int = 2) -> str:
    with recorder.run(agent) as run:
        for i in range(calls):
            with run.llm_call(f"call-{i}", model_name="m") as call:
                call.set_usage(output_tokens=20 + i, prompt_tokens=10, total_tokens=30 + i)
        with run.tool_call("search"):
            pass
    return str(run.id)


def topic_records(bootstrap: str, topic: str, **client) -> list:
    return run_sync(read_all(bootstrap, topic, **client))


def spooled_runs(spool_dir: Path) -> int:
    spool = Spool(spool_dir)
    try:
        segments, damaged = spool.scan()
        assert damaged == 0
        return sum(s.runs for s in segments)
    finally:
        spool.close()


def test_records_are_keyed_by_agent_on_the_murmur2_partition(kafka_broker, tmp_path) -> None:
    topic = kafka_broker.create_topic(TopicNames.unique("rec").runs, PARTITIONS)
    registry = CollectorRegistry()
    recorder = RunRecorder(kafka_broker.bootstrap, tmp_path, topic=topic, registry=registry)
    ids = {record(recorder, f"agent-{i % 7}", calls=i % 4): f"agent-{i % 7}" for i in range(70)}
    assert recorder.flush(timeout=60)
    assert recorder.close(timeout=10)
    records = topic_records(kafka_broker.bootstrap, topic)
    assert len(records) == 70
    for item in records:
        run = parse_run(item.value)
        assert ids[str(run.id)] == run.agent_id == item.key.decode()
        assert item.partition == (murmur2(item.key) & 0x7FFFFFFF) % PARTITIONS
    assert {str(parse_run(r.value).id) for r in records} == set(ids)
    assert registry.get_sample_value("agent_hints_recorder_runs_sent_total") == 70
    assert list(tmp_path.glob("*.seg")) == []  # acknowledged: nothing left on disk


def test_scram_listener(kafka_broker, tmp_path) -> None:
    topic = kafka_broker.create_topic(TopicNames.unique("scram").runs, 1)
    client = kafka_broker.sasl_client_config("SCRAM-SHA-512")
    settings = KafkaSettings(
        security_protocol=client["security_protocol"],
        sasl_mechanism=client["sasl_mechanism"],
        sasl_username=client["sasl_plain_username"],
        sasl_password=client["sasl_plain_password"],
    )
    recorder = RunRecorder(
        kafka_broker.sasl_bootstrap, tmp_path, topic=topic, kafka=settings, registry=None
    )
    run_id = record(recorder, "secure-agent")
    assert recorder.flush(timeout=60)
    recorder.close()
    (item,) = topic_records(kafka_broker.bootstrap, topic)
    assert str(parse_run(item.value).id) == run_id


def run_recording_process(kafka_broker, spool_dir: Path, topic: str, *args: str):
    return subprocess.run(
        [sys.executable, str(RECORD_RUNS), "--bootstrap", kafka_broker.bootstrap,
         "--spool-dir", str(spool_dir), "--topic", topic, *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_runs_spooled_while_the_broker_is_down_survive_restarts_and_count_once(
    kafka_broker, tmp_path, workers
) -> None:
    topics = TopicNames.unique("spool")
    kafka_broker.create_topic(topics.runs, PARTITIONS)
    spool_dir = tmp_path / "spool"
    agents = ["planner", "coder", "critic"]
    expected: Counter[str] = Counter()
    all_ids: set[str] = set()

    kafka_broker.stop()
    try:
        # an agent process records while the broker is down and exits cleanly...
        clean = run_recording_process(
            kafka_broker, spool_dir, topics.runs, "--agents", ",".join(agents), "--runs", "30"
        )
        assert clean.returncode == 0, clean.stderr[-3000:]
        out = json.loads(clean.stdout.splitlines()[-1])
        assert out["closed_clean"] is False  # nothing could be sent
        # ...and the next one, on the same spool, crashes (SIGKILL) after recording
        crashed = run_recording_process(
            kafka_broker, spool_dir, topics.runs, "--agents", "planner,critic", "--runs", "20",
            "--kill-after-spooled",
        )  # fmt: skip
        assert crashed.returncode == -9, crashed.stderr[-3000:]
        for result in (out, json.loads(crashed.stdout.splitlines()[-1])):
            for agent, ids in result["ids"].items():
                expected[agent] += len(ids)
                all_ids.update(ids)
        assert len(all_ids) == 50
        assert spooled_runs(spool_dir) == 50  # both processes' runs are on disk
    finally:
        kafka_broker.start()

    registry = CollectorRegistry()
    recorder = RunRecorder(kafka_broker.bootstrap, spool_dir, topic=topics.runs, registry=registry)
    assert recorder.flush(timeout=90), recorder.stats()
    assert recorder.close(timeout=10)
    assert registry.get_sample_value("agent_hints_recorder_runs_sent_total") == 50
    assert spooled_runs(spool_dir) == 0

    records = topic_records(kafka_broker.bootstrap, topics.runs)
    assert {str(parse_run(r.value).id) for r in records} == all_ids

    worker = WorkerProcess(kafka_broker.bootstrap, topics=topics)
    workers.append(worker)
    worker.start()
    worker.wait_ready(timeout=120)

    def counted() -> dict[str, int]:
        hints = read_latest(kafka_broker.bootstrap, topics.hints)
        return {agent: record["runs"] for agent, record in hints.items()}

    worker.wait_for(lambda: counted() == dict(expected), f"runs counted {dict(expected)}", 120)
    time.sleep(1.0)  # a second publication cycle would show a double count
    assert counted() == dict(expected)


def test_a_live_recorder_rides_out_a_broker_restart(kafka_broker, tmp_path) -> None:
    topic = kafka_broker.create_topic(TopicNames.unique("restart").runs, PARTITIONS)
    registry = CollectorRegistry()
    recorder = RunRecorder(kafka_broker.bootstrap, tmp_path, topic=topic, registry=registry)
    ids = {record(recorder, "a") for _ in range(10)}
    assert recorder.flush(timeout=60)
    kafka_broker.stop()
    try:
        ids |= {record(recorder, "b") for _ in range(10)}  # recording never blocks meanwhile
        deadline = time.monotonic() + 30
        while recorder.stats().spool_runs < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert recorder.stats().spool_runs == 10
        assert recorder.flush(timeout=1.5) is False
    finally:
        kafka_broker.start()
    ids |= {record(recorder, "c") for _ in range(10)}
    assert recorder.flush(timeout=120), recorder.stats()
    assert recorder.close(timeout=10)
    sent = [str(parse_run(r.value).id) for r in topic_records(kafka_broker.bootstrap, topic)]
    assert set(sent) == ids  # every run arrived (a re-send may repeat one: the worker dedupes)
    assert registry.get_sample_value("agent_hints_recorder_runs_sent_total") == 30
    assert (registry.get_sample_value("agent_hints_recorder_runs_spooled_total") or 0) >= 10


def test_runs_the_broker_refuses_are_kept_apart_and_counted(kafka_broker, tmp_path) -> None:
    # the topic takes batches of at most 1,500 bytes: small runs fit (alone, if their batch
    # was refused), the big ones never will
    topic = kafka_broker.create_topic(
        TopicNames.unique("small").runs, 1, config={"max.message.bytes": "1500"}
    )
    registry = CollectorRegistry()
    recorder = RunRecorder(kafka_broker.bootstrap, tmp_path, topic=topic, registry=registry)
    small = {record(recorder, "small", calls=1) for _ in range(8)}
    big = {record(recorder, "big", calls=12) for _ in range(3)}  # ~2.5 KB each
    assert recorder.flush(timeout=60), recorder.stats()
    assert recorder.close()
    delivered = {str(parse_run(r.value).id) for r in topic_records(kafka_broker.bootstrap, topic)}
    assert delivered == small
    rejected = Spool(tmp_path)
    try:
        (segments, _) = rejected.scan()
        assert segments == []  # nothing left to send
    finally:
        rejected.close()
    from worker.recorder.spool import decode

    kept = {
        str(parse_run(v).id)
        for path in (tmp_path / "rejected").iterdir()
        for v in decode(path.read_bytes()).values
    }
    assert kept == big
    assert (
        registry.get_sample_value(
            "agent_hints_recorder_runs_failed_total", {"reason": "rejected_by_broker"}
        )
        == 3
    )
    assert registry.get_sample_value("agent_hints_recorder_runs_sent_total") == 8


def test_runs_are_sent_while_recording_goes_on(kafka_broker, tmp_path) -> None:
    """Under a steady stream of runs the spool writer always has work: sending must not
    wait for a pause in recording."""
    topic = kafka_broker.create_topic(TopicNames.unique("steady").runs, PARTITIONS)
    registry = CollectorRegistry()
    recorder = RunRecorder(kafka_broker.bootstrap, tmp_path, topic=topic, registry=registry)
    recorded = 0
    deadline = time.monotonic() + 30
    while not registry.get_sample_value("agent_hints_recorder_runs_sent_total"):
        assert time.monotonic() < deadline, "nothing was sent while runs kept coming"
        record(recorder, f"agent-{recorded % 5}")
        recorded += 1
        time.sleep(0.001)
    assert recorder.flush(timeout=60)
    assert recorder.close()
    assert len(topic_records(kafka_broker.bootstrap, topic)) == recorded
