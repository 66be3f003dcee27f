"""`wait_for_topics` rides out a broker that is not ready yet, and no longer than it may."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, RequestTimedOutError

from worker.kafka import reading


@pytest.mark.parametrize(
    "error",
    [LookupError("no topic"), KafkaConnectionError(), NodeNotReadyError(), RequestTimedOutError()],
)
async def test_transient_errors_are_retried_until_the_topics_answer(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    calls = []

    async def flaky(client_kwargs: dict[str, Any], *topics: str) -> list[TopicPartition]:
        calls.append(topics)
        if len(calls) < 3:
            raise error
        return [TopicPartition(topics[0], 0)]

    monkeypatch.setattr(reading, "topic_partitions", flaky)
    found = await reading.wait_for_topics({}, "agent-runs", timeout_s=5)
    assert found == [TopicPartition("agent-runs", 0)] and len(calls) == 3


async def test_past_the_timeout_the_error_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(client_kwargs: dict[str, Any], *topics: str) -> list[TopicPartition]:
        raise NodeNotReadyError("node 1")

    monkeypatch.setattr(reading, "topic_partitions", never)
    with pytest.raises(NodeNotReadyError):
        await reading.wait_for_topics({}, "agent-runs", timeout_s=0.3)
