"""What the worker writes to its state changelog, measured on the real topic (issue 10, 8)."""

from __future__ import annotations

import time

import orjson
import pytest

from devtools.worker_process import (
    TopicNames,
    WorkerProcess,
    produce,
    produce_paced,
    read_all,
    run_sync,
)
from worker.demo_workload import generate_runs

pytestmark = pytest.mark.integration

LEARNED = "agent_hints_runs_learned_total"


def changelog_bytes_after(bootstrap: str, topic: str, start: dict[int, int]) -> tuple[int, int]:
    """(records, key + value bytes) of the changelog past the offsets in `start`."""
    records = [
        r for r in run_sync(read_all(bootstrap, topic)) if r.offset >= start.get(r.partition, 0)
    ]
    return len(records), sum(len(r.key or b"") + len(r.value or b"") for r in records)


def test_a_busy_agent_writes_about_what_it_learns_to_the_changelog(kafka_broker, workers):
    """Before: a busy agent's whole value (its statistics and up to 10,000 run ids) was
    written at every commit, 17x the input at 10 runs/s. Now: the runs learned (and a
    snapshot now and then), at most twice the input at 10 runs/s."""
    runs = list(generate_runs(3_150, 1, seed=21))
    values = [orjson.dumps({**run, "agent_id": "busy-agent"}) for run in runs]
    topics = TopicNames.unique("wa")
    kafka_broker.create_topic(topics.runs, partitions=1)
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    workers.append(worker)
    worker.start().wait_ready()
    changelog = f"{worker.group_id}-agent-state-changelog"

    warm = values[:3_000]  # a busy agent: 3,000 runs learned
    run_sync(produce(kafka_broker.bootstrap, topics.runs, [(b"busy-agent", v) for v in warm]))
    worker.wait_for(lambda: worker.metrics().get(LEARNED, 0) >= 3_000, "3,000 runs", 120)
    time.sleep(2.5)  # its state committed
    start = {
        r.partition: r.offset + 1 for r in run_sync(read_all(kafka_broker.bootstrap, changelog))
    }

    live = values[3_000:]
    run_sync(produce_paced(kafka_broker.bootstrap, topics.runs, b"busy-agent", live, per_second=10))
    worker.wait_for(lambda: worker.metrics().get(LEARNED, 0) >= len(values), "every run", 60)
    time.sleep(2.5)  # the last commit
    records, written = changelog_bytes_after(kafka_broker.bootstrap, changelog, start)
    sent = sum(len(v) + len(b"busy-agent") for v in live)
    assert records > 10  # written commit by commit
    assert written <= 2 * sent, f"{written:,} changelog bytes for {sent:,} input bytes"
    assert worker.stop() == 0
