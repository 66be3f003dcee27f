"""What the router client writes, as Dynamo 1.6.1's real frontend and KV router read it.

docs/router.md says: the `dynamo` profile's requests are accepted, `nemo-relay`'s are
refused with 400 (Dynamo refuses unknown `nvext.agent_hints` fields), and the policy's
priority reaches the router queue: under load, a request with a higher priority sent
later is served before one sent earlier.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import pytest

from devtools.dynamo.model_dir import MODEL_NAME
from devtools.dynamo.processes import DynamoStack
from tests.unit.client.test_priority import chain_runs, client_with
from worker.client import render

HINTS = {"osl": 64, "iat": 250, "priority": 2, "latency_sensitivity": 3.0,
         "prefix_id": "chat-d1", "total_requests": 3}  # fmt: skip


def body(max_tokens: int, text: str = "hello") -> dict[str, Any]:
    return {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
    }


async def post(
    session: aiohttp.ClientSession, url: str, data: dict[str, Any], headers: dict[str, str]
) -> tuple[int, Any, float]:
    """(status, JSON answer, seconds until the answer was complete)."""
    start = time.monotonic()
    async with session.post(url + "/v1/chat/completions", json=data, headers=headers) as r:
        answer = await r.json(content_type=None)
        return r.status, answer, time.monotonic() - start


@pytest.mark.parametrize("policy", ["level", "age-remaining", "classes", "none"])
async def test_the_dynamo_profile_is_accepted_under_every_policy(
    dynamo: DynamoStack, policy: str
) -> None:
    client, _ = client_with(("chat", chain_runs("chat")), policy=policy, classes={"chat": 3})
    request = body(8)
    resolution = client.hints_for("chat", "run-1", "draft")
    headers = client.render(resolution, request, {}).headers
    assert "agent_hints" in request["nvext"]
    async with aiohttp.ClientSession() as session:
        status, answer, _ = await post(session, dynamo.url, request, headers)
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] == 8
    assert answer["choices"][0]["message"]["content"]  # the tokenizer decodes the mocker's ids


async def test_the_nemo_relay_profile_is_refused_with_400(dynamo: DynamoStack) -> None:
    request = body(8)
    headers = render("nemo-relay", HINTS, request, {}).headers
    async with aiohttp.ClientSession() as session:
        status, answer, _ = await post(session, dynamo.url, request, headers)
    assert status == 400
    assert "unknown field" in str(answer)


async def _late_request_first(dynamo: DynamoStack, priority: int | None) -> tuple[float, float]:
    """Fill the engine (8 sequences) and its router queue with 24 equal requests, then send
    `early` (no priority) and, 0.2 s later, `late` (`priority` rendered by the client);
    seconds until each was answered, measured from when `early` was sent. The blockers'
    prompts are long: the router holds requests back (queues them) only while the engine's
    prefill load is above `--router-queue-threshold`; short prompts go straight through to
    the engine's own first-come queue, where no priority applies (and so do prompts whose
    prefix is cached: only uncached prefill counts)."""
    salt = uuid.uuid4().hex  # no prefix-cache hits from an earlier call: cached prompts
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        blockers = [
            asyncio.create_task(
                post(session, dynamo.url, body(200, f"{salt} {i} " + "word " * 1000), {})
            )
            for i in range(24)
        ]
        await asyncio.sleep(0.5)
        early = asyncio.create_task(post(session, dynamo.url, body(4, "early"), {}))
        await asyncio.sleep(0.2)
        late_body = body(4, "late")
        headers = render("dynamo", HINTS, late_body, {}, priority=priority).headers
        late = asyncio.create_task(post(session, dynamo.url, late_body, headers))
        results = await asyncio.gather(early, late, *blockers)
        assert all(status == 200 for status, _, _ in results), results
        (_, _, early_s), (_, _, late_s) = results[0], results[1]
        return early_s, 0.2 + late_s


async def test_the_priority_reaches_the_router_queue(dynamo: DynamoStack) -> None:
    """Dynamo 1.6.1 exposes no per-priority metric; the queue's order shows it."""
    early, late = await _late_request_first(dynamo, priority=None)
    assert late > early - 0.1, (early, late)  # without a priority: not before `early`
    early, late = await _late_request_first(dynamo, priority=30)
    assert late < early - 0.5, (early, late)  # 30 s of head start: served a wave earlier
