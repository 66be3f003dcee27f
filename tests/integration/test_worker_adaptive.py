"""The worker under the adaptive rule set publishes what `replay` prints for the same input
(issue 24): hints, tries (with each node's model), recent accuracy, and so the priors a router
pools from them, through a restart that folds stored deltas back run by run."""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from benchmarks.scenarios import START_NS, interleave, random_profile
from devtools.worker_process import (
    TopicNames,
    WorkerProcess,
    assert_outputs_match,
    expected_outputs,
    outputs_complete,
    produce,
    read_latest,
    run_sync,
)
from worker.learner.priors import PriorIndex

ENV = {"WORKER_LEARNER__SEMANTICS": "adaptive", "WORKER_COMMIT_INTERVAL_S": "0.3"}


def drifting_fleet(seed: int = 3) -> list[dict[str, Any]]:
    """12 agents x 30 runs; half of them change model or prompt after run 15 (tokens triple,
    a step renamed and one added): their streaks make them forget, as the scenarios do."""
    rng = random.Random(seed)
    profiles = [random_profile(rng, f"a-{i:02d}") for i in range(12)]
    changed = {p.agent_id: p.changed(rng) for p in profiles[::2]}
    return interleave(
        rng,
        [(p, 30) for p in profiles],
        START_NS,
        lambda profile, k: changed.get(profile.agent_id, profile) if k >= 15 else profile,
    )


def priors_of(tries: dict[str, dict[str, Any]]) -> dict[tuple[str, str | None], Any]:
    index = PriorIndex()
    for agent_id, trie in tries.items():
        index.set_trie(agent_id, trie)
    keys = {
        (name, node.get("model"))
        for trie in tries.values()
        for name, node in trie["root"]["children"].items()
    }
    return {key: index.prediction(*key) for key in sorted(keys, key=str)}


def test_the_worker_publishes_what_replay_prints_under_adaptive(kafka_broker, workers) -> None:
    runs = drifting_fleet()
    records = [(r["agent_id"].encode(), orjson.dumps(r)) for r in runs]
    rng = random.Random(9)
    for _ in range(40):  # producer retries: the same record again a little later
        at = rng.randrange(len(records))
        records.insert(min(len(records), at + rng.randint(1, 20)), records[at])
    expected = expected_outputs(runs, semantics="adaptive")
    forgot = [
        agent
        for agent, want in expected.items()
        if want["trie"]["root"]["predictions_any_index"]["remaining_calls"]["sample_count"]
        < sum(1 for r in runs if r["agent_id"] == agent for c in r["calls"] if c["kind"] == "llm")
    ]
    assert forgot, "the input must make some agent forget (a shift)"

    topics = TopicNames.unique("ad")
    worker = WorkerProcess(kafka_broker.bootstrap, topics, env=ENV)
    workers.append(worker)
    worker.start().wait_ready()
    half = len(records) // 2
    for start in range(0, half, half // 4):  # in several commits: snapshots, then deltas
        end = min(half, start + half // 4)
        run_sync(produce(kafka_broker.bootstrap, topics.runs, records[start:end]))
        worker.wait_for(
            lambda end=end: worker.metrics()["agent_hints_runs_consumed_total"] >= end,
            "a quarter of the first half learned",
            timeout=120,
        )
        time.sleep(0.8)  # a commit or two (commit_interval_s 0.3)
    assert worker.metrics()['agent_hints_state_written_bytes_total{record="delta"}'] > 0
    assert worker.stop() == 0  # its states are read back (snapshots and deltas) after this
    run_sync(produce(kafka_broker.bootstrap, topics.runs, records[half:]))
    worker.restart().wait_ready()
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.bootstrap, topics, expected),
        "hints and tries of every agent with all its runs",
        timeout=180,
    )
    assert_outputs_match(kafka_broker.bootstrap, topics, expected, accuracy=True)
    metrics = worker.metrics()
    assert metrics["agent_hints_runs_learned_total"] <= len(runs)  # none learned twice
    assert worker.stop() == 0

    tries = read_latest(kafka_broker.bootstrap, topics.tries)
    assert all("model" in node for t in tries.values() for node in t["root"]["children"].values())
    replayed = {agent: want["trie"] for agent, want in expected.items()}
    got, want = priors_of(tries), priors_of(replayed)
    assert got.keys() == want.keys() and got == want
