"""Acceptance tests of `python -m worker run` against the real broker (issue 4)."""

from __future__ import annotations

import hashlib
import random
import signal
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from devtools.worker_process import (
    TopicNames,
    WorkerProcess,
    assert_outputs_match,
    expected_outputs,
    outputs_complete,
    produce,
    read_all,
    run_sync,
)
from worker.demo_workload import generate_runs
from worker.kafka.reading import new_reader, topic_partitions

pytestmark = pytest.mark.integration


def mixed_key_records(
    runs: list[dict[str, Any]], seed: int = 7, duplicates: int = 100
) -> list[tuple[bytes | None, bytes]]:
    """Each run keyed right, not keyed, or keyed with another agent; some sent twice."""
    rng = random.Random(seed)
    agents = sorted({r["agent_id"] for r in runs})
    records: list[tuple[bytes | None, bytes]] = []
    for i, run in enumerate(runs):
        value = orjson.dumps(run)
        choice = i % 3
        if choice == 0:
            key: bytes | None = run["agent_id"].encode()
        elif choice == 1:
            key = None
        else:
            key = rng.choice([a for a in agents if a != run["agent_id"]]).encode()
        records.append((key, value))
    for _ in range(duplicates):  # producer retries: the same run again, maybe keyed otherwise
        _key, value = records[rng.randrange(len(records))]
        at = rng.randrange(len(records))
        records.insert(at, (rng.choice([None, _key, agents[0].encode()]), value))
    return records


def test_hints_equal_replay_with_mixed_keys_and_duplicates(kafka_broker, workers) -> None:
    runs = list(generate_runs(2000, 30, seed=11))
    records = mixed_key_records(runs)
    expected = expected_outputs(runs)
    topics = TopicNames.unique("eq")
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    workers.append(worker)
    worker.start().wait_ready()

    run_sync(produce(kafka_broker.bootstrap, topics.runs, records))
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.bootstrap, topics, expected),
        "hints of all 30 agents with all their runs",
        timeout=120,
    )
    assert_outputs_match(kafka_broker.bootstrap, topics, expected)

    m = worker.metrics()
    assert m["agent_hints_runs_consumed_total"] == len(records)
    assert m["agent_hints_runs_learned_total"] == len(runs)
    assert m["agent_hints_runs_duplicate_total"] == len(records) - len(runs)
    assert sum(v for k, v in m.items() if k.startswith("agent_hints_runs_rejected_total")) == 0
    assert m["agent_hints_runs_rekeyed_total"] > 0
    assert m["agent_hints_agents_cached"] == 30
    assert m['agent_hints_published_total{output="hints"}'] >= 30
    assert m['agent_hints_published_total{output="tries"}'] >= 30
    assert m["agent_hints_run_end_to_publish_seconds_count"] > 0
    assert m["agent_hints_consume_to_publish_seconds_count"] > 0
    assert worker.stop() == 0


def bad_records(agent: str) -> list[tuple[str, bytes]]:
    """(expected reason, value) for each kind of bad input."""
    good = next(iter(generate_runs(1, 1, seed=3, start_ns=1_700_000_000_000_000_000)))
    many_calls = {**good, "id": "00000000-0000-4000-8000-000000000001"}
    many_calls["calls"] = good["calls"] * 10  # > max_calls_per_run = 20
    long_name = {**good, "id": "00000000-0000-4000-8000-000000000002"}
    long_name["calls"] = [{**good["calls"][0], "kind": "llm", "name": "x" * 100}]
    return [
        ("invalid_json", b'{"id": "not closed'),
        ("invalid_json", b"\xff\xfe not utf-8"),
        ("schema", b"[1, 2, 3]"),
        ("schema", orjson.dumps({**good, "agent_id": agent, "started_at": "yesterday"})),
        ("schema", orjson.dumps({k: v for k, v in good.items() if k != "id"})),
        ("too_large", orjson.dumps({**good, "agent_id": agent, "pad": "p" * 70_000})),
        ("limits", orjson.dumps({**many_calls, "agent_id": agent})),
        ("limits", orjson.dumps({**long_name, "agent_id": agent})),
    ]


def test_bad_input_goes_to_dlq_and_good_runs_around_it_are_learned(kafka_broker, workers):
    runs = list(generate_runs(300, 5, seed=21, llm_calls=(2, 4)))
    agent = runs[0]["agent_id"]
    bad = bad_records(agent)
    records: list[tuple[bytes | None, bytes]] = []
    for i, run in enumerate(runs):
        records.append((run["agent_id"].encode(), orjson.dumps(run)))
        if i % 30 == 5 and bad:
            records.append((agent.encode(), bad.pop(0)[1]))
    records.extend((agent.encode(), value) for _, value in bad)
    topics = TopicNames.unique("dlq")
    worker = WorkerProcess(
        kafka_broker.bootstrap,
        topics,
        env={
            "WORKER_LIMITS__MAX_RECORD_BYTES": "65536",
            "WORKER_LIMITS__MAX_CALLS_PER_RUN": "20",
            "WORKER_LIMITS__MAX_NAME_LENGTH": "64",
        },
    )
    workers.append(worker)
    worker.start().wait_ready()
    run_sync(produce(kafka_broker.bootstrap, topics.runs, records))
    expected = expected_outputs(runs)
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.bootstrap, topics, expected),
        "hints of every agent",
        timeout=90,
    )
    assert_outputs_match(kafka_broker.bootstrap, topics, expected)

    wanted = bad_records(agent)
    dead = run_sync(read_all(kafka_broker.bootstrap, topics.dlq))
    assert len(dead) == len(wanted)
    by_value = {record.value: record for record in dead}
    for reason, value in wanted:
        record = by_value[value]  # the original bytes, unchanged
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["error.reason"] == reason, headers
        assert headers["error.detail"]
        assert headers["source.topic"] == topics.runs
        assert int(headers["source.partition"]) >= 0 and int(headers["source.offset"]) >= 0
        assert record.key == agent.encode()

    m = worker.metrics()
    for reason in ("invalid_json", "schema", "too_large", "limits"):
        count = sum(1 for r, _ in wanted if r == reason)
        assert m[f'agent_hints_runs_rejected_total{{reason="{reason}"}}'] == count, reason
    assert m["agent_hints_runs_learned_total"] == len(runs)
    assert m["agent_hints_runs_consumed_total"] == len(records)
    assert worker.stop(signal.SIGINT) == 0


def test_restart_mid_stream_counts_nothing_twice(kafka_broker, workers) -> None:
    runs = list(generate_runs(2000, 30, seed=31))
    records = mixed_key_records(runs, seed=5, duplicates=50)
    expected = expected_outputs(runs)
    topics = TopicNames.unique("rs")
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    workers.append(worker)
    worker.start().wait_ready()
    half = len(records) // 2
    run_sync(produce(kafka_broker.bootstrap, topics.runs, records[:half]))
    worker.wait_for(
        lambda: worker.metrics()["agent_hints_runs_consumed_total"] >= half // 2,
        "the worker to be mid-stream",
    )
    assert worker.stop() == 0  # SIGTERM while records are still waiting

    run_sync(produce(kafka_broker.bootstrap, topics.runs, records[half:]))
    worker.restart().wait_ready()
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.bootstrap, topics, expected),
        "hints with every run after the restart",
        timeout=120,
    )
    assert_outputs_match(kafka_broker.bootstrap, topics, expected)
    assert worker.metrics()["agent_hints_runs_learned_total"] <= len(runs)
    assert worker.stop() == 0


def test_readyz_flips_and_healthz(kafka_broker, workers) -> None:
    topics = TopicNames.unique("rz")
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    workers.append(worker)
    worker.start()
    worker.wait_for(lambda: worker._get("/healthz")[0] in (200, 503), "the metrics server")
    worker.wait_ready()
    assert worker._get("/healthz")[0] == 200
    assert worker.metrics()["agent_hints_ready"] == 1
    assert worker.stop() == 0


def test_scram_authenticated_run(kafka_broker, workers) -> None:
    assert kafka_broker.sasl_bootstrap, "the session broker has a SCRAM listener"
    client = kafka_broker.sasl_client_config()
    runs = list(generate_runs(200, 4, seed=41, llm_calls=(2, 4)))
    expected = expected_outputs(runs)
    topics = TopicNames.unique("scram")
    worker = WorkerProcess(
        kafka_broker.sasl_bootstrap,
        topics,
        env={
            "WORKER_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "WORKER_KAFKA__SASL_MECHANISM": kafka_broker.scram_mechanism,
            "WORKER_KAFKA__SASL_USERNAME": kafka_broker.scram_user,
            "WORKER_KAFKA__SASL_PASSWORD": kafka_broker.scram_password,
        },
    )
    workers.append(worker)
    worker.start().wait_ready()
    records = [(r["agent_id"].encode(), orjson.dumps(r)) for r in runs]
    run_sync(produce(kafka_broker.sasl_bootstrap, topics.runs, records, **client))
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.sasl_bootstrap, topics, expected, **client),
        "hints over the SCRAM listener",
        timeout=90,
    )
    assert_outputs_match(kafka_broker.sasl_bootstrap, topics, expected, **client)
    assert kafka_broker.scram_password not in worker.log_text()
    assert worker.stop() == 0


def test_refuses_non_compacted_output_topic(kafka_broker) -> None:
    topics = TopicNames.unique("nc")
    kafka_broker.create_topic(topics.hints, partitions=4, config={"cleanup.policy": "delete"})
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    assert worker.run_to_exit() != 0
    assert f"output topic {topics.hints}" in worker.log_text()
    assert "compact" in worker.log_text()


def test_state_dir_parents_are_created_and_a_bad_one_is_named(
    kafka_broker, workers, tmp_path
) -> None:
    nested = tmp_path / "not" / "yet" / "there"
    worker = WorkerProcess(kafka_broker.bootstrap, TopicNames.unique("sd"), state_dir=nested)
    workers.append(worker)
    worker.start().wait_ready()
    assert nested.is_dir()
    assert worker.stop() == 0
    assert "\x1b" not in worker.log_text()  # no terminal escape codes (faust's spinner)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unusable = blocker / "state"
    bad = WorkerProcess(kafka_broker.bootstrap, TopicNames.unique("sd"), state_dir=unusable)
    assert bad.run_to_exit() == 3
    assert f"cannot start: state_dir {unusable} cannot be used: Not a directory" in bad.log_text()


def test_a_bad_record_too_large_for_the_dlq_is_kept_as_a_prefix(kafka_broker, workers) -> None:
    """A 1,048,450-byte invalid record on a default topic, and a 2 MB one on a runs topic that
    accepts 4 MB: both reach the DLQ (which accepts ~1 MB) as a prefix with their size,
    SHA-256 and source offset, nothing crashes, and the good runs around them are learned."""
    topics = TopicNames.unique("bigdlq")
    big_topic = {"max.message.bytes": str(4 * 1024 * 1024)}
    kafka_broker.create_topic(topics.runs, partitions=4, config=big_topic)
    runs = list(generate_runs(40, 2, seed=23, llm_calls=(2, 3)))
    agent = runs[0]["agent_id"]
    just_under = b"{" + b"x" * (1_048_450 - 1)  # invalid JSON, as large as a default topic takes
    huge = b"[" + b"y" * (2 * 1024 * 1024 - 1)
    records = [(r["agent_id"].encode(), orjson.dumps(r)) for r in runs[:20]]
    records += [(agent.encode(), just_under), (agent.encode(), huge)]
    records += [(r["agent_id"].encode(), orjson.dumps(r)) for r in runs[20:]]
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    workers.append(worker)
    worker.start().wait_ready()
    run_sync(produce(kafka_broker.bootstrap, topics.runs, records, max_request_size=5 << 20))
    expected = expected_outputs(runs)
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.bootstrap, topics, expected),
        "hints of the good runs",
        timeout=90,
    )
    dead = run_sync(read_all(kafka_broker.bootstrap, topics.dlq))
    assert len(dead) == 2
    originals = {len(just_under): (just_under, "invalid_json"), len(huge): (huge, "too_large")}
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        original, reason = originals.pop(int(headers["dlq.original_size"]))
        assert headers["dlq.truncated"] == "true"
        assert headers["dlq.original_sha256"] == hashlib.sha256(original).hexdigest()
        assert headers["error.reason"] == reason
        assert int(headers["source.offset"]) >= 0
        assert original.startswith(record.value) and len(record.value) > 1_000_000
    m = worker.metrics()
    assert m["agent_hints_dlq_truncated_total"] == 2
    assert m["agent_hints_runs_learned_total"] == len(runs)
    assert worker.stop() == 0


def test_static_membership_gets_the_partitions_back_without_waiting_for_the_session(
    kafka_broker, workers
) -> None:
    """kill -9, then the same worker (same group.instance.id) again: ready long before the
    dead member's session (60 s here) expires, and every run counted once."""
    runs = list(generate_runs(300, 10, seed=51, llm_calls=(2, 4)))
    expected = expected_outputs(runs)
    topics = TopicNames.unique("static")
    env = {"WORKER_GROUP_INSTANCE_ID": "worker-0", "WORKER_SESSION_TIMEOUT_S": "60"}
    worker = WorkerProcess(kafka_broker.bootstrap, topics, env=env)
    workers.append(worker)
    worker.start().wait_ready()
    records = [(r["agent_id"].encode(), orjson.dumps(r)) for r in runs]
    run_sync(produce(kafka_broker.bootstrap, topics.runs, records[:150]))
    worker.wait_for(lambda: worker.metrics()["agent_hints_runs_learned_total"] > 0, "learning")
    worker.kill()
    worker.restart()
    worker.wait_ready(timeout=30)  # half the session timeout: no wait for the dead member
    run_sync(produce(kafka_broker.bootstrap, topics.runs, records[150:]))
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.bootstrap, topics, expected),
        "every run after the restart",
        timeout=90,
    )
    assert_outputs_match(kafka_broker.bootstrap, topics, expected)
    assert worker.stop() == 0


def wide_runs(agent: str, count: int, names_per_run: int) -> list[dict[str, Any]]:
    """Runs of `agent` that each add `names_per_run` new 256-character call names."""
    template = next(iter(generate_runs(1, 1, seed=41, start_ns=1_700_000_000_000_000_000)))
    call = next(c for c in template["calls"] if c["kind"] == "llm")
    runs = []
    for i in range(count):
        names = [f"{i:03d}-{j:03d}-".ljust(256, "n") for j in range(names_per_run)]
        calls = [{**call, "name": name} for name in names]
        runs.append(
            {
                **template,
                "id": f"00000000-0000-4000-8000-{i:012d}",
                "agent_id": agent,
                "calls": calls,
            }
        )
    return runs


def test_a_run_that_would_make_an_unpublishable_trie_is_rejected(kafka_broker, workers) -> None:
    """With the default limits (128 nodes, 1,000 predictions, 256-character names) every trie
    fits the tries topic: the run that would grow one past them goes to the DLQ as `limits`,
    and the agent's trie and everyone else's hints keep being published."""
    topics = TopicNames.unique("wide")
    wide = wide_runs("wide-agent", 5, 30)  # 1 + 4 x 30 nodes fit; the fifth run's 151 do not
    deep = {**wide[0], "id": "00000000-0000-4000-8000-100000000000", "agent_id": "deep-agent"}
    deep["calls"] = [{**wide[0]["calls"][0], "name": "step"} for _ in range(600)]  # 1,200
    runs = list(generate_runs(200, 6, seed=42, llm_calls=(2, 4)))
    records = [(r["agent_id"].encode(), orjson.dumps(r)) for r in [*wide, deep, *runs]]
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    workers.append(worker)
    worker.start().wait_ready()
    run_sync(produce(kafka_broker.bootstrap, topics.runs, records))
    expected = expected_outputs([*wide[:4], *runs])
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.bootstrap, topics, expected),
        "the tries and hints of every agent",
        timeout=90,
    )
    assert_outputs_match(kafka_broker.bootstrap, topics, expected)
    dead = run_sync(read_all(kafka_broker.bootstrap, topics.dlq))
    details = {record.key.decode(): {k: v.decode() for k, v in record.headers} for record in dead}
    assert sorted(details) == ["deep-agent", "wide-agent"]
    assert details["wide-agent"]["error.reason"] == "limits"
    assert "would have 151 trie nodes" in details["wide-agent"]["error.detail"]
    assert details["deep-agent"]["error.reason"] == "limits"
    assert "max_trie_predictions" in details["deep-agent"]["error.detail"]
    tries = run_sync(read_all(kafka_broker.bootstrap, topics.tries))
    (wide_trie,) = [t for t in tries if t.key == b"wide-agent"]
    assert len(orjson.loads(wide_trie.value)["root"]["children"]) == 120
    m = worker.metrics()
    assert m["agent_hints_publish_failing_agents"] == 0
    assert m['agent_hints_runs_rejected_total{reason="limits"}'] == 2
    assert worker.get("/healthz") is not None
    assert worker.stop() == 0


def test_refuses_limits_whose_largest_trie_the_tries_topic_cannot_take(kafka_broker) -> None:
    topics = TopicNames.unique("small")
    small = {"cleanup.policy": "compact", "max.message.bytes": "500000"}
    kafka_broker.create_topic(topics.tries, partitions=4, config=small)
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    assert worker.run_to_exit() == 2
    log = worker.log_text()
    assert f"but topic {topics.tries} accepts 500,000 (max.message.bytes)" in log, log[-2000:]


async def committed_to_end(bootstrap: str, group_id: str, topic: str) -> bool:
    """True once the group's committed offsets reach the end of every partition of `topic`."""
    kafka = {"bootstrap_servers": bootstrap}
    partitions = await topic_partitions(kafka, topic)
    admin = AIOKafkaAdminClient(**kafka)
    reader = new_reader(kafka)
    await admin.start()
    await reader.start()
    try:
        committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
        ends = await reader.end_offsets(partitions)
    finally:
        await reader.stop()
        await admin.close()
    done = {tp: meta.offset for tp, meta in committed.items()}
    return all(max(done.get(tp, 0), 0) >= end for tp, end in ends.items())


def test_committed_offsets_imply_published_outputs(kafka_broker, workers) -> None:
    """A crash right after a commit: the replay skips the committed runs as learned, so their
    agents' hints and tries must already be out when the offsets are committed."""
    topics = TopicNames.unique("pubcommit")
    runs = list(generate_runs(3_000, 40, seed=51))
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    workers.append(worker)
    worker.start().wait_ready()
    run_sync(
        produce(
            kafka_broker.bootstrap,
            topics.runs,
            [(r["agent_id"].encode(), orjson.dumps(r)) for r in runs],
        )
    )
    worker.wait_for(
        lambda: run_sync(committed_to_end(kafka_broker.bootstrap, worker.group_id, topics.runs)),
        "the offsets of every run committed",
        timeout=120,
        interval=0.02,
    )
    worker.kill()  # at once: nothing published after the commit
    assert_outputs_match(kafka_broker.bootstrap, topics, expected_outputs(runs))
