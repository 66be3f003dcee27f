"""Per-record limits and the processor's decisions (no Kafka)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from worker.learner import AgentState, LearnerConfig
from worker.records import RecordError, parse_run
from worker.settings import LimitSettings
from worker.stream.limits import check_nodes, check_run, check_size
from worker.stream.processor import Processor, partition_for
from worker.stream.state import StateCache
from worker.workload import generate_runs

START = 1_700_000_000_000_000_000


def run_dict(seed: int = 1) -> dict[str, Any]:
    return next(iter(generate_runs(1, 1, seed=seed, start_ns=START)))


def test_size_limits() -> None:
    limits = LimitSettings(max_record_bytes=10)
    check_size(b"0123456789", limits)
    with pytest.raises(RecordError) as info:
        check_size(b"01234567890", limits)
    assert info.value.reason == "too_large"
    with pytest.raises(RecordError) as info:
        check_size(None, limits)
    assert info.value.reason == "schema"


def test_calls_and_name_limits() -> None:
    run = parse_run(orjson.dumps(run_dict()))
    check_run(run, LimitSettings())
    with pytest.raises(RecordError, match="max_calls_per_run") as info:
        check_run(run, LimitSettings(max_calls_per_run=1))
    assert info.value.reason == "limits"
    with pytest.raises(RecordError, match="agent_id is 10 characters"):
        check_run(run, LimitSettings(max_name_length=3))
    data = run_dict()
    data["calls"][1]["name"] = "n" * 50
    with pytest.raises(RecordError, match=r"calls\.1\.name is 50 characters"):
        check_run(parse_run(orjson.dumps(data)), LimitSettings(max_name_length=20))


def test_node_limit_counts_new_names_only() -> None:
    run = parse_run(orjson.dumps(run_dict()))
    state = AgentState()
    needed = state.nodes_after(run)
    check_nodes(state, run, LimitSettings(max_trie_nodes=needed))
    with pytest.raises(RecordError, match="max_trie_nodes"):
        check_nodes(state, run, LimitSettings(max_trie_nodes=needed - 1))


class FakeTable(dict):
    def get(self, key, default=None):  # type: ignore[override]
        return super().get(key, default)


def make_processor(partitions: int = 4, **limits: Any) -> Processor:
    cache = StateCache(FakeTable(), max_agents=100)
    return Processor(cache, LearnerConfig(), LimitSettings(**limits), partitions)


def test_partition_for_matches_kafka_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    for agent in ("agent-0000", "agent-0001", "x", "ü-agent"):
        want = DefaultPartitioner()(agent.encode(), list(range(6)), list(range(6)))
        assert partition_for(agent, 6) == want


def test_processor_learns_dedupes_rekeys_and_rejects() -> None:
    p = make_processor()
    run = run_dict()
    value = orjson.dumps(run)
    home = partition_for(run["agent_id"], 4)
    other = (home + 1) % 4
    assert p.process(value, other, event=None).kind == "rekey"
    assert p.process(value, other, event=None).partition == home
    assert p.process(value, home, event=object()).kind == "learned"
    assert p.process(value, home, event=object()).kind == "duplicate"
    assert p.process(b"{nope", home, event=None).reason == "invalid_json"
    assert p.process(b'{"id": 1}', home, event=None).reason == "schema"
    batch = p.cache.take_to_publish()
    assert [agent for agent, _ in batch] == [run["agent_id"]]
    assert batch[0][1].state.runs == 1


def test_state_cache_reads_stored_state() -> None:
    run = parse_run(orjson.dumps(run_dict()))
    state = AgentState()
    state.learn(run, LearnerConfig())
    table = FakeTable({run.agent_id.encode(): state.to_bytes()})
    cache = StateCache(table, max_agents=10)
    entry = cache.get(run.agent_id, 0)
    assert entry.state.has_run(run.id) and entry.state.runs == 1
    assert cache.keep_partitions({1}) == 1 and len(cache) == 0
