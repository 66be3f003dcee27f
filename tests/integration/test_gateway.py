"""The hints gateway in-process, driven by the real `openai` SDK, against the real broker.

The gateway follows the topics a real worker published (published_hints.py) and forwards to
a stand-in upstream (devtools/fake_upstream.py) that records what it received.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from devtools.fake_upstream import FakeUpstream
from devtools.worker_process import free_port, parse_metrics
from tests.integration.published_hints import Published, published
from worker.client import HintsClient
from worker.gateway import CallObserver, CompletedCall, GatewayConfig, GatewayServer
from worker.gateway.observer import StartedCall
from worker.learner import LearnerConfig, lookup_hints
from worker.settings import PrioritySettings

# async fixtures live on the session's loop (pyproject): the tests must run on it too
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CONFIG = LearnerConfig()
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def outputs(kafka_broker: Any) -> Published:
    return published(kafka_broker)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = await FakeUpstream().start()
    yield up
    await up.stop()


class Recorder(CallObserver):
    """A CallObserver that keeps what it is told."""

    def __init__(self) -> None:
        self.started: list[StartedCall] = []
        self.calls: list[CompletedCall] = []

    def call_started(self, call: StartedCall) -> None:
        self.started.append(call)

    def call_completed(self, call: CompletedCall) -> None:
        self.calls.append(call)


@asynccontextmanager
async def running_gateway(
    outputs: Published,
    upstream_url: str,
    *,
    ready: bool = True,
    bootstrap: str | None = None,
    observers: tuple[Any, ...] = (),
    client: dict[str, Any] | None = None,
    **config: Any,
) -> AsyncIterator[GatewayServer]:
    hints = HintsClient(
        bootstrap or outputs.bootstrap,
        hints_topic=outputs.topics.hints,
        tries_topic=outputs.topics.tries,
        # the level as priority: these tests check what is forwarded, not the policies
        **({"priority": PrioritySettings(policy="level")} | (client or {})),
    )
    server = GatewayServer(
        GatewayConfig(upstream=upstream_url, host="127.0.0.1", port=0, **config),
        hints,
        observers=observers,
    )
    await server.start()
    try:
        if ready:
            assert await hints.wait_ready(30), hints.view.status
        yield server
    finally:
        await server.stop()


def base_url(server: GatewayServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def sdk(server: GatewayServer, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=base_url(server) + "/v1", api_key="test-key", max_retries=0, timeout=30, **kwargs
    )


def agent_headers(agent: str = "planner", run: str | None = None, name: str | None = None):
    headers = {"x-agent-id": agent, "x-agent-run-id": run or str(uuid.uuid4())}
    if name is not None:
        headers["x-agent-call-name"] = name
    return headers


def trie_hints(outputs: Published, name: str, index: int, agent: str = "planner"):
    hints = lookup_hints(outputs.expected[agent]["trie"], [name], index, CONFIG)
    assert hints is not None
    return hints


def dynamo_expected(hints: dict[str, Any]) -> dict[str, Any]:
    return {"osl": hints["osl"], "priority": round(hints["latency_sensitivity"])}


async def metrics(server: GatewayServer) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(base_url(server) + "/metrics") as response,
    ):
        return parse_metrics(await response.text())


# --- the OpenAI SDK, plain and streamed ---------------------------------------------------------


async def test_sdk_plain_call_answer_unchanged_and_upstream_gets_hints(
    outputs: Published, upstream: FakeUpstream
) -> None:
    async with running_gateway(outputs, upstream.url) as server:
        run = str(uuid.uuid4())
        raw = await sdk(server).chat.completions.with_raw_response.create(
            model="any-model",
            messages=MESSAGES,
            extra_headers=agent_headers(run=run, name="write"),
        )
        assert raw.http_response.content == upstream.sent[-1]  # byte for byte
        answer = raw.parse()
        assert answer.usage is not None and answer.usage.total_tokens == 10
        got = upstream.received[-1]
        want = dynamo_expected(trie_hints(outputs, "write", 1))
        assert got.agent_hints() == want
        assert got.hint_headers() == {"x-dynamo-request-priority": str(want["priority"])}
        assert json.loads(answer.choices[0].message.content or "")["agent_hints"] == want
        assert got.json()["messages"] == MESSAGES and got.json()["model"] == "any-model"
        assert got.headers["authorization"] == "Bearer test-key"


async def test_sdk_stream_is_relayed_chunk_by_chunk(
    outputs: Published, upstream: FakeUpstream
) -> None:
    upstream.gate = asyncio.Event()  # the upstream holds the rest until the gate opens
    async with running_gateway(outputs, upstream.url) as server:
        stream = await sdk(server).chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=agent_headers(name="plan"),
        )
        first = await asyncio.wait_for(anext(stream), 30)  # arrives while the rest is held
        report = json.loads(first.choices[0].delta.content or "")
        want = dynamo_expected(trie_hints(outputs, "plan", 1))
        assert report["agent_hints"] == want
        upstream.gate.set()
        rest = [chunk async for chunk in stream]
        words = "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
        assert words == "hints received upstream"
        assert rest[-1].usage is not None and rest[-1].usage.completion_tokens == 3
        assert upstream.received[-1].agent_hints() == want


async def test_sdk_completions_endpoint_gets_hints_named_after_the_model(
    outputs: Published, upstream: FakeUpstream
) -> None:
    async with running_gateway(outputs, upstream.url) as server:
        run = str(uuid.uuid4())
        for _ in range(2):  # no call-name header: the body's model names the call
            await sdk(server).completions.create(
                model="write", prompt="hi", extra_headers=agent_headers(run=run)
            )
        assert upstream.received[-2].path == "/v1/completions"
        assert upstream.received[-2].agent_hints() == dynamo_expected(
            trie_hints(outputs, "write", 1)
        )
        assert upstream.received[-1].agent_hints() == dynamo_expected(
            trie_hints(outputs, "write", 2)
        )


async def test_sdk_streamed_completions(outputs: Published, upstream: FakeUpstream) -> None:
    async with running_gateway(outputs, upstream.url) as server:
        stream = await sdk(server).completions.create(
            model="m", prompt="hi", stream=True, extra_headers=agent_headers(name="plan")
        )
        texts = [chunk.choices[0].text async for chunk in stream if chunk.choices]
        assert "".join(texts[1:]) == "hints received upstream"
        assert upstream.received[-1].agent_hints() == dynamo_expected(
            trie_hints(outputs, "plan", 1)
        )


# --- the three profiles, exactly ----------------------------------------------------------------


async def test_profile_nemo_relay(outputs: Published, upstream: FakeUpstream) -> None:
    client = {"profile": "nemo-relay"}
    async with running_gateway(outputs, upstream.url, client=client) as server:
        await sdk(server).chat.completions.create(
            model="m", messages=MESSAGES, extra_headers=agent_headers(name="write")
        )
        got = upstream.received[-1]
        want = trie_hints(outputs, "write", 1)
        assert got.agent_hints() == want
        assert list(got.agent_hints()) == [
            "osl", "iat", "priority", "latency_sensitivity", "prefix_id", "total_requests"
        ]  # fmt: skip
        header = got.hint_headers()["x-nemo-relay-adaptive-agent-hints"]
        assert json.loads(header) == want
        assert set(got.hint_headers()) == {"x-nemo-relay-adaptive-agent-hints"}


async def test_profile_nat_headers(outputs: Published, upstream: FakeUpstream) -> None:
    client = {"profile": "nat-headers"}
    async with running_gateway(outputs, upstream.url, client=client) as server:
        await sdk(server).chat.completions.create(
            model="m", messages=MESSAGES, extra_headers=agent_headers(name="write")
        )
        got = upstream.received[-1]
        want = trie_hints(outputs, "write", 1)
        assert "nvext" not in got.json()
        assert got.hint_headers() == {
            "x-prefix-id": "planner-d1",
            "x-prefix-total-requests": str(want["total_requests"]),
            "x-prefix-osl": str(want["osl"]),
            "x-prefix-iat": str(want["iat"]),
            "x-prefix-latency-sensitivity": str(round(want["latency_sensitivity"])),
        }


async def test_caller_set_fields_win_unless_overwrite(
    outputs: Published, upstream: FakeUpstream
) -> None:
    caller = {"nvext": {"agent_hints": {"osl": 7}, "other": 1}}
    want = dynamo_expected(trie_hints(outputs, "write", 1))
    async with running_gateway(outputs, upstream.url) as server:
        await sdk(server).chat.completions.create(
            model="m",
            messages=MESSAGES,
            extra_body=caller,
            extra_headers=agent_headers(name="write") | {"x-dynamo-request-priority": "9"},
        )
        got = upstream.received[-1]
        assert got.json()["nvext"] == {"agent_hints": {"osl": 7}, "other": 1}
        assert got.hint_headers() == {"x-dynamo-request-priority": "9"}
    async with running_gateway(outputs, upstream.url, client={"overwrite": True}) as server:
        await sdk(server).chat.completions.create(
            model="m",
            messages=MESSAGES,
            extra_body=caller,
            extra_headers=agent_headers(name="write") | {"x-dynamo-request-priority": "9"},
        )
        got = upstream.received[-1]
        assert got.json()["nvext"] == {"agent_hints": want, "other": 1}
        assert got.hint_headers() == {"x-dynamo-request-priority": str(want["priority"])}


# --- what passes through untouched --------------------------------------------------------------


async def test_requests_without_agent_header_pass_unchanged(
    outputs: Published, upstream: FakeUpstream
) -> None:
    body = b'{"model":"m",  "messages":[{"role":"user","content":"hi"}], "z": 1.50}'
    async with (
        running_gateway(outputs, upstream.url) as server,
        aiohttp.ClientSession() as session,
        session.post(
            base_url(server) + "/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json", "x-agent-run-id": "r"},
        ) as response,
    ):
        assert response.status == 200
        assert await response.read() == upstream.sent[-1]
    assert upstream.received[-1].body == body
    assert upstream.received[-1].hint_headers() == {}


async def test_other_paths_methods_headers_and_queries_pass_unchanged(
    outputs: Published, upstream: FakeUpstream
) -> None:
    async with running_gateway(outputs, upstream.url) as server:
        models = await sdk(server).models.list()
        assert [m.id for m in models.data] == ["fake-model"]
        async with aiohttp.ClientSession() as session:
            for method in ("GET", "PUT", "DELETE", "PATCH", "POST"):
                body = b"" if method in ("GET", "DELETE") else b"raw \x00 bytes"
                async with session.request(
                    method,
                    base_url(server) + "/echo/a%20b/c?x=1&y=%C3%A9",
                    data=body or None,
                    headers={"x-agent-id": "planner", "X-Custom": "kept", "Cookie": "c=1"},
                ) as response:
                    assert response.status == 200 and response.headers["x-fake"] == "yes"
                    echo = await response.json()
                assert echo["method"] == method
                assert echo["raw_path"] == "/echo/a%20b/c?x=1&y=%C3%A9"  # as sent, encoded
                headers = {k.lower(): v for k, v in echo["headers"]}
                assert headers["x-custom"] == "kept" and headers["cookie"] == "c=1"
                assert upstream.received[-1].body == body
                assert upstream.received[-1].hint_headers() == {}


async def test_error_statuses_and_bodies_pass_unchanged(
    outputs: Published, upstream: FakeUpstream
) -> None:
    async with (
        running_gateway(outputs, upstream.url) as server,
        aiohttp.ClientSession() as session,
    ):
        for status in (400, 404, 418, 429, 500, 503):
            async with session.post(
                base_url(server) + f"/status/{status}", json={"model": "m"}
            ) as response:
                assert response.status == status
                assert response.headers["x-fake"] == "yes"
                error = await response.json()
                assert error["error"]["message"] == f"fake error {status}"
        with pytest.raises(openai.RateLimitError) as caught:  # the SDK sees the upstream's
            await sdk(server).chat.completions.create(
                model="m", messages=MESSAGES, extra_headers={"x-fake-status": "429"}
            )
        assert caught.value.status_code == 429


# --- bad input ----------------------------------------------------------------------------------


async def post_raw(
    server: GatewayServer, body: Any, headers: dict[str, str], path: str = "/v1/chat/completions"
) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url(server) + path, data=body, headers=headers) as response,
    ):
        return response.status, await response.read()


@pytest.mark.parametrize(
    "body",
    [b'{"model": "m", "messages": [', b"\xff\xfe not utf-8", b"", b'["a", "list"]', b"42"],
    ids=["truncated", "not-utf8", "empty", "array", "number"],
)
async def test_a_body_that_is_not_a_json_object_is_forwarded_as_is(
    outputs: Published, upstream: FakeUpstream, body: bytes
) -> None:
    async with running_gateway(outputs, upstream.url) as server:
        status, answer = await post_raw(server, body, agent_headers(name="write"))
        assert status == 400  # the upstream's answer
        assert json.loads(answer)["error"]["type"] == "invalid_request_error"
        assert upstream.received[-1].body == body
        assert upstream.received[-1].hint_headers() == {}
        m = await metrics(server)
        reason = "not_object" if body in (b'["a", "list"]', b"42") else "invalid_json"
        assert m[f'agent_hints_gateway_unchanged_total{{reason="{reason}"}}'] == 1


async def test_a_huge_body_is_streamed_through_without_hints(
    outputs: Published, upstream: FakeUpstream
) -> None:
    big = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 300_000}]})
    async with running_gateway(outputs, upstream.url, max_body_bytes=64 * 1024) as server:
        status, _ = await post_raw(server, big, agent_headers(name="write"))
        assert status == 200
        assert upstream.received[-1].body == big and upstream.received[-1].agent_hints() is None

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
            for i in range(0, len(big), 10_000):
                yield big[i : i + 10_000]

        status, _ = await post_raw(server, chunks(), agent_headers(name="write"))
        assert status == 200
        assert upstream.received[-1].body == big and upstream.received[-1].agent_hints() is None
        small = orjson.dumps({"model": "m", "messages": MESSAGES})
        status, _ = await post_raw(server, small, agent_headers(name="write"))
        assert status == 200 and upstream.received[-1].agent_hints() is not None
        m = await metrics(server)
        assert m['agent_hints_gateway_unchanged_total{reason="too_large"}'] == 2


async def test_an_unreachable_upstream_is_a_502_not_a_crash(outputs: Published) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running_gateway(outputs, dead) as server:
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as caught:
                await sdk(server).chat.completions.create(
                    model="m", messages=MESSAGES, extra_headers=agent_headers(name="write")
                )
            assert caught.value.status_code == 502
            assert "cannot reach the upstream" in caught.value.message
        status, _ = await post_raw(server, b"{}", {}, path="/anything")
        assert status == 502
        m = await metrics(server)
        assert m['agent_hints_gateway_upstream_errors_total{kind="unreachable"}'] == 3
        assert m['agent_hints_gateway_requests_total{route="chat_completions",status="502"}'] == 2
        async with (
            aiohttp.ClientSession() as session,
            session.get(base_url(server) + "/healthz") as response,
        ):
            assert response.status == 200


async def test_a_slow_upstream_is_waited_for_then_a_504(
    outputs: Published, upstream: FakeUpstream
) -> None:
    async with running_gateway(outputs, upstream.url, read_timeout_s=1.0) as server:
        status, body = await post_raw(server, b"{}", {}, path="/slow/200")
        assert status == 200 and json.loads(body) == {"slow": True}
        status, body = await post_raw(server, b"{}", {}, path="/slow/3000")
        assert status == 504
        assert json.loads(body)["error"]["type"] == "upstream_timeout"


async def test_an_upstream_cut_mid_stream_is_cut_for_the_caller(
    outputs: Published, upstream: FakeUpstream
) -> None:
    async with running_gateway(outputs, upstream.url) as server:
        headers = agent_headers(name="write") | {"x-fake-cut": "1"}
        with pytest.raises(openai.APIError):
            stream = await sdk(server).chat.completions.create(
                model="m", messages=MESSAGES, stream=True, extra_headers=headers
            )
            async for _ in stream:
                pass
        await sdk(server).chat.completions.create(  # and the gateway goes on
            model="m", messages=MESSAGES, extra_headers=agent_headers(name="write")
        )
        m = await metrics(server)
        assert m['agent_hints_gateway_upstream_errors_total{kind="broken"}'] == 1


async def test_no_hints_and_503_readyz_while_the_view_cannot_load(
    outputs: Published, upstream: FakeUpstream
) -> None:
    dead_broker = f"127.0.0.1:{free_port()}"
    async with running_gateway(outputs, upstream.url, ready=False, bootstrap=dead_broker) as server:
        await sdk(server).chat.completions.create(
            model="m", messages=MESSAGES, extra_headers=agent_headers(name="write")
        )
        assert upstream.received[-1].agent_hints() is None
        assert upstream.received[-1].hint_headers() == {}
        async with aiohttp.ClientSession() as session:
            async with session.get(base_url(server) + "/readyz") as response:
                assert response.status == 503
            async with session.get(base_url(server) + "/healthz") as response:
                assert response.status == 200
        m = await metrics(server)
        assert m['agent_hints_gateway_hints_total{source="none"}'] == 1
        assert m["agent_hints_gateway_view_ready"] == 0


# --- metrics and the observer hook --------------------------------------------------------------


async def test_metrics_count_routes_sources_and_added_time(
    outputs: Published, upstream: FakeUpstream
) -> None:
    fallback = {
        "osl": 1, "iat": 0, "priority": 4, "latency_sensitivity": 1.0,
        "prefix_id": "fallback", "total_requests": 1,
    }  # fmt: skip
    async with running_gateway(
        outputs, upstream.url, client={"fallback": fallback, "min_runs": 2}
    ) as server:
        client = sdk(server)
        await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers=agent_headers(name="plan")
        )
        await client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            extra_headers={"x-agent-id": "planner", "x-agent-run-id": "", "x-agent-call-name": "p"},
        )
        await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers=agent_headers("solo", name="answer")
        )
        await client.completions.create(
            model="m", prompt="p", extra_headers=agent_headers("stranger", name="x")
        )
        await client.models.list()
        m = await metrics(server)
    assert m['agent_hints_gateway_hints_total{source="trie"}'] == 1
    assert m['agent_hints_gateway_hints_total{source="agent_default"}'] == 1  # no run id
    assert m['agent_hints_gateway_hints_total{source="fallback"}'] == 2
    assert m['agent_hints_gateway_entries_skipped_total{reason="min_runs"}'] == 1
    assert m['agent_hints_gateway_requests_total{route="chat_completions",status="200"}'] == 3
    assert m['agent_hints_gateway_requests_total{route="completions",status="200"}'] == 1
    assert m['agent_hints_gateway_requests_total{route="other",status="200"}'] == 1
    assert m["agent_hints_gateway_added_seconds_count"] == 5
    assert m['agent_hints_gateway_view_agents{topic="hints"}'] >= 4
    assert m["agent_hints_gateway_view_ready"] == 1
    assert m["agent_hints_gateway_view_lag_records"] == 0
    assert m["agent_hints_gateway_runs_tracked"] == 3


async def test_observers_see_each_call_with_usage_and_model(
    outputs: Published, upstream: FakeUpstream
) -> None:
    recorder = Recorder()
    async with running_gateway(outputs, upstream.url, observers=(recorder,)) as server:
        run = str(uuid.uuid4())
        await sdk(server).chat.completions.create(
            model="model-a", messages=MESSAGES, extra_headers=agent_headers(run=run, name="plan")
        )
        stream = await sdk(server).chat.completions.create(
            model="model-b",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=agent_headers(run=run),
        )
        async for _ in stream:
            pass
        await sdk(server).models.list()  # not an LLM call: not observed
    plain, streamed = recorder.calls
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert (plain.agent_id, plain.run_id, plain.name, plain.route) == (
        "planner", run, "plan", "chat_completions"
    )  # fmt: skip
    assert plain.usage == usage and plain.model == "model-a" and plain.status == 200
    assert streamed.name == "model-b" and streamed.usage == usage and streamed.model == "model-b"
    assert plain.started_ns <= plain.ended_ns <= streamed.started_ns <= streamed.ended_ns
    assert plain.complete and streamed.complete
    assert [(c.call_id, c.started_ns, c.run_id) for c in recorder.started] == [
        (plain.call_id, plain.started_ns, run),
        (streamed.call_id, streamed.started_ns, run),
    ]
    assert plain.call_id != streamed.call_id
    assert not plain.run_end and not recorder.started[0].run_end


async def test_a_run_end_header_restarts_the_runs_call_indexes(
    outputs: Published, upstream: FakeUpstream
) -> None:
    assert trie_hints(outputs, "write", 1) != trie_hints(outputs, "write", 2)
    async with running_gateway(outputs, upstream.url) as server:
        run = str(uuid.uuid4())
        client = sdk(server)
        for end in ("", "true"):
            await client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                extra_headers=agent_headers(run=run, name="write") | {"x-agent-run-end": end},
            )
            assert server.client.calls.peek("planner", run, "write") == (1 if not end else 0)
        assert upstream.received[-1].agent_hints() == dynamo_expected(
            trie_hints(outputs, "write", 2)
        )  # the end call was still the run's second call
        await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers=agent_headers(run=run, name="write")
        )
        assert server.client.calls.peek("planner", run, "write") == 1  # a new run
        assert upstream.received[-1].agent_hints() == dynamo_expected(
            trie_hints(outputs, "write", 1)
        )


async def test_a_fan_out_shares_one_priority_and_its_group_closes(
    outputs: Published, upstream: FakeUpstream
) -> None:
    """Default policy (age-remaining): four `write` calls of one run sent together reach the
    upstream with one priority; once all are answered the group is closed, so the run's
    next `write` is resolved on its own (index 5)."""
    assert trie_hints(outputs, "write", 1) != trie_hints(outputs, "write", 2)
    async with running_gateway(
        outputs, upstream.url, client={"priority": PrioritySettings()}
    ) as server:
        run = str(uuid.uuid4())
        client = sdk(server)
        slow = agent_headers(run=run, name="write") | {"x-fake-delay-ms": "300"}
        await asyncio.gather(*(
            client.chat.completions.create(model="m", messages=MESSAGES, extra_headers=slow)
            for _ in range(4)
        ))  # fmt: skip
        sent = [r.agent_hints() for r in upstream.received[-4:]]
        assert len({json.dumps(h, sort_keys=True) for h in sent}) == 1, sent
        assert isinstance(sent[0]["priority"], int)
        assert len(server.client.fanouts) == 0
        await client.chat.completions.create(
            model="m", messages=MESSAGES, extra_headers=agent_headers(run=run, name="write")
        )
        assert server.client.calls.peek("planner", run, "write") == 5
