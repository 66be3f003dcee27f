"""Per-record limits (SPEC 2): size, calls, names, trie nodes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from worker.demo_workload import generate_runs
from worker.errors import RecordError
from worker.learner import AgentState
from worker.learner.limits import Limits, check_nodes, check_run, check_size
from worker.models import parse_run

START = 1_700_000_000_000_000_000


def run_dict(seed: int = 1) -> dict[str, Any]:
    return next(iter(generate_runs(1, 1, seed=seed, start_ns=START)))


def test_size_limits() -> None:
    limits = Limits(max_record_bytes=10)
    check_size(b"0123456789", limits)
    with pytest.raises(RecordError) as info:
        check_size(b"01234567890", limits)
    assert info.value.reason == "too_large"
    with pytest.raises(RecordError) as info:
        check_size(None, limits)
    assert info.value.reason == "schema"


def test_calls_and_name_limits() -> None:
    run = parse_run(orjson.dumps(run_dict()))
    check_run(run, Limits())
    with pytest.raises(RecordError, match="max_calls_per_run") as info:
        check_run(run, Limits(max_calls_per_run=1))
    assert info.value.reason == "limits"
    with pytest.raises(RecordError, match="agent_id is 10 characters"):
        check_run(run, Limits(max_name_length=3))
    data = run_dict()
    data["calls"][1]["name"] = "n" * 50
    with pytest.raises(RecordError, match=r"calls\.1\.name is 50 characters"):
        check_run(parse_run(orjson.dumps(data)), Limits(max_name_length=20))


def test_node_limit_counts_new_names_only() -> None:
    run = parse_run(orjson.dumps(run_dict()))
    state = AgentState()
    needed = state.nodes_after(run)
    check_nodes(state, run, Limits(max_trie_nodes=needed))
    with pytest.raises(RecordError, match="max_trie_nodes"):
        check_nodes(state, run, Limits(max_trie_nodes=needed - 1))
