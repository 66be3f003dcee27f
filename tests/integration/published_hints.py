"""Hints and tries published by a real worker, once per test session, for the router tests.

`published(broker)` runs `python -m worker run` on fresh topics, feeds it the runs below,
waits until every agent's hints and trie are out, stops it and returns the topic names with
what replay computes for the same runs (the worker tests prove the two equal).

Agents: `planner` (3 runs: plan, write, write), `solo` (1 run), `tools-only` (no LLM call:
a trie but no hints), and `doomed-trie` / `doomed-agent` for the tombstone tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from devtools.worker_process import (
    TopicNames,
    WorkerProcess,
    expected_outputs,
    outputs_complete,
    produce,
    run_sync,
)

START = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


def _at(ms: int) -> str:
    return (START + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def _llm(name: str, start: int, end: int, tokens: int) -> dict[str, Any]:
    return {
        "kind": "llm",
        "name": name,
        "started_at": _at(start),
        "ended_at": _at(end),
        "output_tokens": tokens,
    }


def _run(agent: str, *calls: dict[str, Any], offset: int = 0) -> dict[str, Any]:
    shifted = [
        {
            **c,
            "started_at": _at(_ms(c["started_at"]) + offset),
            "ended_at": _at(_ms(c["ended_at"]) + offset),
        }
        for c in calls
    ]
    return {
        "id": str(uuid.uuid4()),
        "agent_id": agent,
        "calls": shifted,
        "started_at": _at(offset),
        "ended_at": _at(offset + 2000),
    }


def _ms(stamp: str) -> int:
    return int((datetime.fromisoformat(stamp) - START) / timedelta(milliseconds=1))


def runs() -> list[dict[str, Any]]:
    planner = [
        _run(
            "planner",
            _llm("plan", 0, 100, plan),
            _llm("write", 300, 600, first),
            _llm("write", 800, 1900, second),
            offset=i * 10_000,
        )
        for i, (plan, first, second) in enumerate(
            [(50, 400, 900), (70, 500, 1100), (60, 450, 1000)]
        )
    ]
    tool = {"kind": "tool", "name": "search", "started_at": _at(0), "ended_at": _at(50)}
    return [
        *planner,
        _run("solo", _llm("answer", 0, 500, 128)),
        _run("tools-only", tool),
        _run("doomed-trie", _llm("x", 0, 100, 10)),
        _run("doomed-agent", _llm("x", 0, 100, 10)),
    ]


@dataclass(frozen=True)
class Published:
    bootstrap: str
    topics: TopicNames
    #: agent -> {"agent_id", "hints", "trie", "runs"} as replay computes them
    expected: dict[str, dict[str, Any]]


_CACHE: dict[str, Published] = {}


def published(broker: Any) -> Published:
    """The worker's outputs for `runs()` (computed once per broker and session)."""
    if broker.bootstrap in _CACHE:
        return _CACHE[broker.bootstrap]
    all_runs = runs()
    expected = expected_outputs(all_runs)
    topics = TopicNames.unique("router")
    worker = WorkerProcess(broker.bootstrap, topics)
    try:
        worker.start().wait_ready()
        records = [(r["agent_id"].encode(), orjson.dumps(r)) for r in all_runs]
        run_sync(produce(broker.bootstrap, topics.runs, records))
        worker.wait_for(
            lambda: outputs_complete(broker.bootstrap, topics, expected),
            "hints and tries of every agent",
            timeout=90,
        )
        assert worker.stop() == 0
    finally:
        worker.close()
    _CACHE[broker.bootstrap] = Published(broker.bootstrap, topics, expected)
    return _CACHE[broker.bootstrap]
