"""The processor's decision per record, and the state cache behind it (no Kafka)."""

from __future__ import annotations

from typing import Any

import orjson

from tests.unit.stream.state.changelog_sim import Changelog, LocalStore, SimTable
from worker.demo_workload import generate_runs
from worker.learner import LearnerConfig
from worker.learner.limits import Limits
from worker.models import parse_run
from worker.stream.processor import Outcome, Processor
from worker.stream.publish_queue import PublishQueue
from worker.stream.rekey import partition_for
from worker.stream.state.store import StateStore

START = 1_700_000_000_000_000_000


def run_dict(seed: int = 1) -> dict[str, Any]:
    return next(iter(generate_runs(1, 1, seed=seed, start_ns=START)))


def make_processor(partitions: int = 4, table: Any = None, **limits: Any) -> Processor:
    store = StateStore(table or SimTable(LocalStore(), Changelog(), None), max_bytes=1 << 24)
    return Processor(
        store, PublishQueue(store.cache), LearnerConfig(), Limits(**limits), partitions
    )


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
    assert p.process(value, other, event=None).outcome is Outcome.REKEY
    assert p.process(value, other, event=None).partition == home
    assert p.process(value, home, event=object()).outcome is Outcome.LEARNED
    assert p.process(value, home, event=object()).outcome is Outcome.DUPLICATE
    assert p.process(b"{nope", home, event=None).reason == "invalid_json"
    assert p.process(b'{"id": 1}', home, event=None).reason == "schema"
    batch = p.to_publish.take()
    assert [change.agent_id for change in batch] == [run["agent_id"]]
    assert p.store.state(batch[0].entry).runs == 1


def test_state_store_reads_stored_state() -> None:
    run = parse_run(orjson.dumps(run_dict()))
    table = SimTable(LocalStore(), Changelog(), None)
    p = make_processor(1, table)
    assert p.process(orjson.dumps(run_dict()), 0, event=None).outcome is Outcome.LEARNED
    p.store.write_all()
    table.acknowledge()
    fresh = StateStore(SimTable(table.store, table.changelog, None), max_bytes=1 << 24)
    state = fresh.state(fresh.get(run.agent_id, 0))
    assert state.runs == 1 and run.id.int in fresh.run_ids(0)
    assert state.to_bytes() == p.store.state(p.store.get(run.agent_id, 0)).to_bytes()
    assert len(fresh.keep({1})) == 1 and len(fresh) == 0
