"""The gap guard's restarts (issue 20): a rebalance must not let the consumer skip records.

At the end of a rebalance faust resumes the stream partitions, then seeks them to their
committed offsets, then clears the stream queues; when the table had to be restored from
its changelog, the flow and the fetcher are on all along. Records fetched in between were
cleared, then dropped as already read after the seek: the agent jumped over them, and the
gap guard (`Offsets.check_gap`) restarted the worker (3 of 12 fault-suite scenarios). Here a
worker restores its state from the changelog (its disk lost) with faust's seek slowed by a
second (`slow_seek/sitecustomize.py`), so it crosses that window every time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from devtools.worker_process import TopicNames, WorkerProcess, produce, run_sync
from worker.demo_workload import generate_runs

pytestmark = pytest.mark.integration

SLOW_SEEK = Path(__file__).resolve().parent / "slow_seek"
LEARNED = "agent_hints_runs_learned_total"


def test_no_record_is_skipped_when_a_restore_ends(kafka_broker, workers) -> None:
    topics = TopicNames.unique("gap")
    kafka_broker.create_topic(topics.runs, partitions=4)
    runs = [(r["agent_id"].encode(), orjson.dumps(r)) for r in generate_runs(3_000, 40, seed=20)]
    first, then = runs[:1_000], runs[1_000:]
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    workers.append(worker)
    run_sync(produce(kafka_broker.bootstrap, topics.runs, first))
    worker.start().wait_ready(90)
    worker.wait_for(lambda: worker.metrics().get(LEARNED, 0) >= len(first), "first runs")
    assert worker.stop() == 0  # its offsets committed, its state in the changelog

    run_sync(produce(kafka_broker.bootstrap, topics.runs, then))
    shutil.rmtree(worker.state_dir)  # restored from the changelog: flow and fetcher on
    worker.env.update({"PYTHONPATH": str(SLOW_SEEK), "SLOW_SEEK_S": "1.0"})
    worker.start().wait_ready(90)
    worker.wait_for(lambda: worker.metrics().get(LEARNED, 0) >= len(then), "the rest", 120)
    assert "consumer skipped" not in worker.log_text()
    assert worker.metrics()[LEARNED] == len(then)  # each once, none replayed twice
    assert worker.stop() == 0
