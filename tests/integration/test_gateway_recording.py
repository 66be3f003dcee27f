"""Recording in the gateway (SPEC 9's last item) against the real broker, driven by the real
`openai` SDK: run records whose calls, timings and usage match what the stand-in upstream
answered (devtools/fake_upstream.py `answered`), read back and parsed as the worker does;
runs ending on the header, on idle and at shutdown; a real worker learning them; errors,
a caller gone mid-stream, and the broker down.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from devtools.fake_upstream import Answer, FakeUpstream
from devtools.worker_process import (
    REPO_ROOT,
    TopicNames,
    WorkerProcess,
    expected_outputs,
    outputs_complete,
    read_all,
)
from tests.integration.published_hints import Published, published
from tests.integration.test_gateway_process import GatewayProcess
from worker.client import HintsClient
from worker.gateway import GatewayConfig, GatewayServer
from worker.gateway.metrics import GatewayMetrics
from worker.gateway.recording import GatewayRecording
from worker.models import CallRecord, RunRecord
from worker.models.runs import parse_run_validated as parse_run  # the models: dumped below
from worker.recorder import RunRecorder

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hello"}]
AGENT = "rec-agent"


@pytest.fixture(scope="module")
def outputs(kafka_broker: Any) -> Published:
    return published(kafka_broker)


@pytest.fixture
def runs_topic(kafka_broker: Any) -> str:
    return kafka_broker.create_topic(TopicNames.unique("gwrec").runs, 4)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    up = await FakeUpstream().start()
    yield up
    await up.stop()


@asynccontextmanager
async def recording_gateway(
    outputs: Published,
    upstream_url: str,
    runs_topic: str,
    spool_dir: Path,
    *,
    record_to: str | None = None,
    **recording: Any,
) -> AsyncIterator[tuple[GatewayServer, GatewayRecording]]:
    """An in-process gateway recording to `runs_topic` (on `record_to`, default the broker)."""
    hints = HintsClient(
        outputs.bootstrap, hints_topic=outputs.topics.hints, tries_topic=outputs.topics.tries
    )
    metrics = GatewayMetrics()
    recorder = RunRecorder(
        record_to or outputs.bootstrap,
        spool_dir,
        topic=runs_topic,
        registry=metrics.registry,
        close_at_exit=None,
    )
    observer = GatewayRecording(
        recorder, call_counter=hints.calls, registry=metrics.registry, **recording
    )
    server = GatewayServer(
        GatewayConfig(upstream=upstream_url, host="127.0.0.1", port=0),
        hints,
        [observer],
        metrics=metrics,
    )
    await server.start()
    try:
        assert await hints.wait_ready(30), hints.view.status
        yield server, observer
    finally:
        await server.stop()


def sdk(server: GatewayServer, agent: str = AGENT) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1",
        api_key="k",
        max_retries=0,
        timeout=30,
        default_headers={"x-agent-id": agent},
    )


def headers(run: str, name: str, **extra: str) -> dict[str, str]:
    return {"x-agent-run-id": run, "x-agent-call-name": name, **extra}


async def recorded_runs(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list:
    """The topic's run records once there are `count` of them (parsed as the worker does)."""
    deadline = time.monotonic() + timeout
    while True:
        records = await read_all(bootstrap, topic)
        if len(records) >= count or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(records) == count, f"{len(records)} run records on {topic}, expected {count}"
    for record in records:
        assert parse_run(record.value).agent_id == record.key.decode()  # keyed by agent id
    return sorted((parse_run(r.value) for r in records), key=lambda run: run.started_at)


def assert_call_matches(call: CallRecord, answer: Answer, name: str) -> None:
    """A recorded call is the upstream's answer: usage, model, and a time span around it."""
    assert call.kind == "llm" and call.name == name
    usage = answer.usage or {}
    assert call.output_tokens == usage.get("completion_tokens")
    assert call.prompt_tokens == usage.get("prompt_tokens")
    assert call.total_tokens == usage.get("total_tokens")
    assert call.model_name == answer.model
    assert call.ended_at is not None
    assert call.started_at <= answer.received_ns <= answer.finished_ns <= call.ended_at


def events(stream: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in stream.split(b"\n\n") if e]


def is_usage_event(event: bytes) -> bool:
    data = event.removeprefix(b"data: ").strip()
    if data == b"[DONE]":
        return False
    value = orjson.loads(data)
    return value["choices"] == [] and value.get("usage") is not None


# --- calls, timings and usage --------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_sdk_calls_make_a_run_record_matching_what_the_upstream_answered(
    outputs: Published, upstream: FakeUpstream, runs_topic: str, tmp_path: Path
) -> None:
    run = "caller's run #1"  # any string: the record gets a UUIDv7 of its own
    async with recording_gateway(outputs, upstream.url, runs_topic, tmp_path) as (server, _):
        client = sdk(server)
        plain = await client.chat.completions.create(
            model="model-a",
            messages=MESSAGES,
            max_tokens=11,
            extra_headers=headers(run, "plan", **{"x-fake-delay-ms": "40"}),
        )
        assert plain.usage is not None and plain.usage.completion_tokens == 11

        asked = await client.chat.completions.create(
            model="model-b",
            messages=MESSAGES,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers(run, "write"),
        )
        chunks = [chunk async for chunk in asked]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
        assert upstream.received[-1].json()["stream_options"] == {"include_usage": True}

        not_asked = await client.chat.completions.create(
            model="model-c",
            messages=MESSAGES,
            max_tokens=13,
            stream=True,
            extra_headers=headers(run, "write"),
        )
        chunks = [chunk async for chunk in not_asked]
        assert all(chunk.usage is None for chunk in chunks)  # as without recording
        text = "".join(c.choices[0].delta.content or "" for c in chunks[1:] if c.choices)
        assert text == "hints received upstream"
        asked_upstream = upstream.received[-1].json()
        assert asked_upstream["stream_options"] == {"include_usage": True}  # the gateway asked

        async with client.chat.completions.with_streaming_response.create(
            model="model-d",
            messages=MESSAGES,
            max_tokens=14,
            stream=True,
            extra_headers=headers(run, "review"),
        ) as response:
            raw = await response.read()
        sent = events(upstream.sent[-1])
        assert sum(map(is_usage_event, sent)) == 1
        assert raw == b"".join(e for e in sent if not is_usage_event(e))  # byte for byte

        await client.completions.create(
            model="model-e",
            prompt="sum up",
            max_tokens=15,
            extra_headers=headers(run, "summarise", **{"x-agent-run-end": "true"}),
        )
        (record,) = await recorded_runs(outputs.bootstrap, runs_topic, 1)

    answered = upstream.answered[-5:]
    assert [a.model for a in answered] == ["model-a", "model-b", "model-c", "model-d", "model-e"]
    assert all(a.usage is not None for a in answered)  # the gateway asked when the SDK did not
    names = ["plan", "write", "write", "review", "summarise"]
    assert record.agent_id == AGENT
    assert record.id.version == 7 and str(record.id) != run
    assert len(record.calls) == 5
    for call, answer, name in zip(record.calls, answered, names, strict=True):
        assert_call_matches(call, answer, name)
    assert record.calls[0].ended_at - record.calls[0].started_at >= 40_000_000  # the delay
    assert record.started_at == record.calls[0].started_at
    assert record.ended_at == record.calls[-1].ended_at


@pytest.mark.asyncio(loop_scope="session")
async def test_errors_and_a_caller_gone_mid_stream_are_still_calls(
    outputs: Published, upstream: FakeUpstream, runs_topic: str, tmp_path: Path
) -> None:
    run = str(uuid.uuid4())
    upstream.gate = asyncio.Event()
    async with recording_gateway(outputs, upstream.url, runs_topic, tmp_path) as (server, obs):
        client = sdk(server)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers=headers(run, "plan", **{
                    "x-fake-status": "500"})
            )  # fmt: skip
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, extra_headers=headers(run, "write")
        )
        await anext(stream)  # the first chunk; the upstream holds the rest
        await stream.close()  # the caller goes away
        gone_ns = time.time_ns()
        await asyncio.sleep(0.3)
        upstream.gate.set()  # the gateway finds the caller gone at its next write
        await client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            extra_headers=headers(run, "final", **{"x-agent-run-end": "true"}),
        )
        (record,) = await recorded_runs(outputs.bootstrap, runs_topic, 1)
        assert obs.open_runs == 0
    error, cut, final = record.calls
    assert (error.name, error.output_tokens, error.model_name) == ("plan", None, None)
    assert error.ended_at is not None and error.started_at <= error.ended_at
    assert cut.name == "write" and cut.ended_at is not None and cut.ended_at >= gone_ns
    assert final.name == "final" and final.output_tokens == 3


@pytest.mark.asyncio(loop_scope="session")
async def test_a_run_left_open_ends_after_idle_s(
    outputs: Published, upstream: FakeUpstream, runs_topic: str, tmp_path: Path
) -> None:
    async with recording_gateway(outputs, upstream.url, runs_topic, tmp_path, idle_s=0.5) as (
        server,
        obs,
    ):
        client = sdk(server)
        for name in ("plan", "write"):
            await client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers=headers("idle-run", name)
            )
        assert obs.open_runs == 1
        (record,) = await recorded_runs(outputs.bootstrap, runs_topic, 1)
        assert obs.open_runs == 0
        await client.chat.completions.create(  # the same caller run id: a new run
            model="m", messages=MESSAGES, extra_headers=headers("idle-run", "plan")
        )
        assert obs.open_runs == 1
        assert server.client.calls.peek(AGENT, "idle-run", "plan") == 1  # counts from 1 again
    assert [c.name for c in record.calls] == ["plan", "write"]
    later = await recorded_runs(outputs.bootstrap, runs_topic, 2)  # the second, at shutdown
    assert [c.name for c in later[1].calls] == ["plan"] and later[1].id != record.id


# --- the broker down ------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_with_the_broker_down_requests_flow_and_runs_wait_in_the_spool(
    outputs: Published, upstream: FakeUpstream, runs_topic: str, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    spool = tmp_path / "spool"
    async with recording_gateway(
        outputs, upstream.url, runs_topic, spool, record_to=dead, close_timeout_s=0.5
    ) as (server, obs):
        client = sdk(server)
        for run in ("down-1", "down-2"):
            for name in ("plan", "write"):
                await client.chat.completions.create(
                    model="m",
                    messages=MESSAGES,
                    extra_headers=headers(run, name, **{"x-agent-run-end": str(name == "write")}),
                )
        for _ in range(100):  # ended runs reach the recorder within 50 ms, together
            if obs.recorder.stats().pending_runs == 2:
                break
            await asyncio.sleep(0.05)
        stats = obs.recorder.stats()
        assert stats.pending_runs == 2
        assert "cannot connect" in (stats.last_error or "")
    assert await read_all(outputs.bootstrap, runs_topic) == []
    assert list(spool.glob("*.seg"))  # kept on disk after the gateway stopped
    later = RunRecorder(outputs.bootstrap, spool, topic=runs_topic, registry=None)
    try:
        assert await later.aflush(60)  # the next recorder on the spool sends them
    finally:
        await later.aclose()
    runs = await recorded_runs(outputs.bootstrap, runs_topic, 2)
    assert [[c.name for c in r.calls] for r in runs] == [["plan", "write"], ["plan", "write"]]
    assert all(r.calls[0].output_tokens == 3 for r in runs)


# --- as a process: --record, idle, shutdown, a real worker learning the runs -------------------


def sync_client(gateway: GatewayProcess, agent: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key="k",
        max_retries=0,
        timeout=30,
        default_headers={"x-agent-id": agent},
    )


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def topic_runs(bootstrap: str, topic: str) -> list[RunRecord]:
    from devtools.worker_process import run_sync

    return [parse_run(r.value) for r in run_sync(read_all(bootstrap, topic))]


def test_record_flag_runs_end_on_idle_and_a_real_worker_learns_them(
    outputs: Published, kafka_broker: Any, tmp_path: Path
) -> None:
    topics = TopicNames.unique("gwlearn")
    kafka_broker.create_topic(topics.runs, 4)
    agent = f"learner-{uuid.uuid4().hex[:6]}"
    with FakeUpstream().in_thread() as upstream:
        gateway = GatewayProcess(
            ["--upstream", upstream.url, "--bootstrap-servers", outputs.bootstrap, "--record",
             "--run-idle-s", "1", "--record-spool-dir", str(tmp_path / "spool")],
            env={"WORKER_TOPICS__HINTS": outputs.topics.hints,
                 "WORKER_TOPICS__TRIES": outputs.topics.tries, "WORKER_TOPICS__RUNS": topics.runs},
        )  # fmt: skip
        try:
            gateway.wait_status("/healthz", 200)
            client = sync_client(gateway, agent)
            for run in ("a", "b", "c"):
                for name, tokens in (("plan", 20), ("write", 40), ("write", 60)):
                    client.chat.completions.create(
                        model="m",
                        messages=MESSAGES,
                        max_tokens=tokens + len(run),
                        extra_headers={"x-agent-run-id": run, "x-agent-call-name": name},
                    )
            runs = wait_for(
                lambda: (
                    (r := topic_runs(kafka_broker.bootstrap, topics.runs)) and len(r) == 3 and r
                ),
                "three runs ended by idle",
            )
            metrics = gateway_metrics(gateway)
            assert metrics['agent_hints_gateway_recorded_runs_total{ended_by="idle"}'] == 3
            assert metrics["agent_hints_recorder_runs_sent_total"] == 3
            assert gateway.stop() == 0
        finally:
            gateway.close()
    for run in runs:
        assert run.agent_id == agent
        assert [(c.name, c.output_tokens) for c in run.calls] == [
            ("plan", 21), ("write", 41), ("write", 61)
        ]  # fmt: skip
    as_json = [orjson.loads(run.model_dump_json()) for run in runs]
    expected = expected_outputs(as_json)
    worker = WorkerProcess(kafka_broker.bootstrap, topics)
    try:
        worker.start().wait_ready()
        worker.wait_for(
            lambda: outputs_complete(kafka_broker.bootstrap, topics, expected),
            "hints learned from the gateway's runs",
            timeout=90,
        )
        assert expected[agent]["runs"] == 3
        assert worker.stop() == 0
    finally:
        worker.close()


def gateway_metrics(gateway: GatewayProcess) -> dict[str, float]:
    from urllib.request import urlopen

    from devtools.worker_process import parse_metrics

    with urlopen(gateway.url + "/metrics", timeout=5) as response:
        return parse_metrics(response.read().decode())


def test_shutdown_records_open_runs_and_a_second_gateway_on_the_spool_exits_3(
    outputs: Published, kafka_broker: Any, tmp_path: Path
) -> None:
    topic = kafka_broker.create_topic(TopicNames.unique("gwstop").runs, 2)
    spool = tmp_path / "spool"
    env = {
        "WORKER_TOPICS__HINTS": outputs.topics.hints,
        "WORKER_TOPICS__TRIES": outputs.topics.tries,
        "WORKER_TOPICS__RUNS": topic,
        "WORKER_GATEWAY__RECORD": "true",
        "WORKER_GATEWAY__RECORD_SPOOL_DIR": str(spool),
    }
    with FakeUpstream().in_thread() as upstream:
        args = ["--upstream", upstream.url, "--bootstrap-servers", outputs.bootstrap]
        gateway = GatewayProcess(args, env=env)
        try:
            gateway.wait_status("/healthz", 200)
            client = sync_client(gateway, "stopper")
            client.chat.completions.create(
                model="m", messages=MESSAGES, extra_headers={"x-agent-run-id": "open"}
            )
            clean = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
            second = subprocess.run(
                [sys.executable, "-m", "worker", "gateway", "--host", "127.0.0.1", "--port", "0",
                 *args],
                cwd=REPO_ROOT, env=clean | env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert second.returncode == 3, second.stderr
            assert re.search(r"cannot record runs: spool directory .* is in use", second.stderr)
            assert gateway.stop() == 0  # the open run is recorded at shutdown
        finally:
            gateway.close()
    (run,) = topic_runs(kafka_broker.bootstrap, topic)
    assert run.agent_id == "stopper" and [c.name for c in run.calls] == ["m"]
    assert json.loads(run.model_dump_json())["calls"][0]["output_tokens"] == 3
