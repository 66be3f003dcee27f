"""Replay and the worker agree on every output at a fleet's scale (issue 23): 10,000 agents,
most with one or two runs, the busiest with hundreds (Zipf-skewed), so the worker's cache
serializes, drops and reads agents back, and every agent's runs land in several commits and
tries cycles."""

from __future__ import annotations

import orjson
import pytest

from devtools.worker_process import (
    TopicNames,
    WorkerProcess,
    assert_outputs_match,
    expected_outputs,
    outputs_complete,
    produce,
    run_sync,
)
from worker.demo_workload import FLEET_ZIPF, generate_runs

pytestmark = pytest.mark.integration

AGENTS = 10_000
RUNS = 16_000


def test_replay_and_the_worker_agree_over_ten_thousand_agents(kafka_broker, workers) -> None:
    runs = list(
        generate_runs(RUNS, AGENTS, seed=23, llm_calls=(2, 5), zipf=FLEET_ZIPF, every_agent=True)
    )
    expected = expected_outputs(runs)
    assert len(expected) == AGENTS
    topics = TopicNames.unique("fleet")
    # a small cache: agents are serialized and dropped, then read back from the table
    worker = WorkerProcess(
        kafka_broker.bootstrap, topics, env={"WORKER_STATE_CACHE_BYTES": str(16 << 20)}
    )
    workers.append(worker)
    worker.start().wait_ready(90)
    records = [(run["agent_id"].encode(), orjson.dumps(run)) for run in runs]
    run_sync(produce(kafka_broker.bootstrap, topics.runs, records))
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.bootstrap, topics, expected),
        "every agent's outputs with all its runs",
        timeout=300,
        interval=2.0,
    )
    assert_outputs_match(kafka_broker.bootstrap, topics, expected, accuracy=True)
    metrics = worker.metrics()
    assert metrics["agent_hints_runs_learned_total"] == RUNS
    assert metrics["agent_hints_agents_cached"] < AGENTS  # some were dropped and read back
    assert worker.stop() == 0
