"""Terse builders for RunRecords in tests: times in milliseconds from an epoch offset."""

from __future__ import annotations

import itertools
import uuid

from worker.models import CallRecord, RunRecord

BASE_NS = 1_800_000_000 * 1_000_000_000  # a whole second, so ms offsets map to seconds
_ids = itertools.count(1)


def ms(value: float) -> int:
    return BASE_NS + round(value * 1_000_000)


def llm(
    name: str, start: float, end: float | None, tokens: int | None = None, model: str | None = None
) -> CallRecord:
    return CallRecord(
        kind="llm",
        name=name,
        started_at=ms(start),
        ended_at=None if end is None else ms(end),
        output_tokens=tokens,
        model_name=model,
    )


def tool(name: str, start: float, end: float) -> CallRecord:
    return CallRecord(kind="tool", name=name, started_at=ms(start), ended_at=ms(end))


def run(
    *calls: CallRecord,
    agent: str = "agent",
    ended: float | None = None,
    run_id: uuid.UUID | None = None,
) -> RunRecord:
    return RunRecord(
        id=run_id or uuid.UUID(int=next(_ids), version=4),
        agent_id=agent,
        calls=list(calls),
        started_at=ms(0),
        ended_at=None if ended is None else ms(ended),
    )
