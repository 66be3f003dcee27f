"""The worker's accuracy counters equal `replay --evaluate` on the same input (issue 21):
both score each run before learning it, against the same state, in each agent's order."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from devtools.vectors import VECTORS
from devtools.worker_process import (
    REPO_ROOT,
    TopicNames,
    WorkerProcess,
    assert_outputs_match,
    expected_outputs,
    outputs_complete,
    produce,
    run_sync,
)

pytestmark = pytest.mark.integration

RUNS = VECTORS / "generated.runs.jsonl"
LEARNED = "agent_hints_runs_learned_total"


def replay_evaluation() -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "replay", str(RUNS), "--evaluate", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    )
    return orjson.loads(done.stdout)


def test_the_workers_accuracy_counters_equal_replay_evaluate(kafka_broker, workers) -> None:
    lines = RUNS.read_bytes().splitlines()
    records = [(orjson.loads(line)["agent_id"].encode(), line) for line in lines]
    records += records[:10]  # producer retries: duplicates are neither learned nor scored
    topics = TopicNames.unique("acc")
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    workers.append(worker)
    worker.start().wait_ready(90)
    run_sync(produce(kafka_broker.bootstrap, topics.runs, records))
    worker.wait_for(lambda: worker.metrics().get(LEARNED, 0) >= len(lines), "every run", 90)
    got = worker.metrics()
    want = replay_evaluation()

    assert got[LEARNED] == want["runs"] == len(lines)
    for source, count in want["sources"].items():
        assert got[f'agent_hints_accuracy_calls_total{{source="{source}"}}'] == count
    scored = want["scored"]
    assert got["agent_hints_accuracy_osl_covered_total"] == round(want["osl_coverage"] * scored)
    osl_count = got["agent_hints_accuracy_osl_abs_error_tokens_count"]
    assert osl_count == scored
    osl_sum = got["agent_hints_accuracy_osl_abs_error_tokens_sum"]
    assert osl_sum / osl_count == pytest.approx(want["osl_mae"], rel=1e-9)
    iat_count = got["agent_hints_accuracy_iat_abs_error_ms_count"]
    iat_sum = got["agent_hints_accuracy_iat_abs_error_ms_sum"]
    assert iat_count > 0 and iat_sum / iat_count == pytest.approx(want["iat_mae_ms"], rel=1e-9)
    flips = got["agent_hints_accuracy_level_flips_total"]
    assert flips == round(want["level_flips_per_100_runs"] * want["runs"] / 100)

    # each agent's hints record carries its recent accuracy as replay has it
    expected = expected_outputs(orjson.loads(line) for line in lines)
    worker.wait_for(lambda: outputs_complete(kafka_broker.bootstrap, topics, expected), "outputs")
    assert all(want["accuracy"] is not None for want in expected.values())
    assert_outputs_match(kafka_broker.bootstrap, topics, expected, accuracy=True)
