"""The NeMo Relay adapter against the real `nemo-relay` package: for the same agent runs, the
records it produces to Kafka equal, call for call, what NeMo Relay itself stores in its Redis
backend (record-only mode, `learners=[]`), with a local redis-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import nemo_relay
import orjson
import pytest
import redis
from nemo_relay.adaptive import (
    AdaptiveConfig,
    AdaptiveRuntime,
    BackendSpec,
    StateConfig,
    TelemetryConfig,
)
from prometheus_client import CollectorRegistry

from devtools.worker_process import TopicNames, read_all, run_sync
from tests.integration.redis_server import RedisServer
from worker.models import parse_run
from worker.models.timestamps import parse_timestamp_ns
from worker.recorder import RunRecorder
from worker.recorder.nemo_relay import NemoRelayRecorder

AGENT_ID = "planner-agent"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def response(
    model: str | None = "m", usage: tuple[int, int, int] | None = (30, 120, 150), tools: int = 0
) -> dict[str, Any]:
    """An OpenAI chat completion."""
    message: dict[str, Any] = {"role": "assistant", "content": "ok"}
    if tools:
        message["tool_calls"] = [
            {"id": f"c{i}", "type": "function", "function": {"name": "search", "arguments": "{}"}}
            for i in range(tools)
        ]
    body: dict[str, Any] = {"id": "r", "choices": [{"message": message}]}
    if model is not None:
        body["model"] = model
    if usage is not None:
        prompt, completion, total = usage
        body["usage"] = {
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
        }  # fmt: skip
    return body


async def llm(
    name: str,
    answer: dict[str, Any],
    *,
    delay: float = 0.0,
    response_codec: bool = True,
    request_codec: bool = False,
) -> None:
    request = nemo_relay.LLMRequest(
        {}, {"model": "requested", "messages": [{"role": "user", "content": f"do {name}"}]}
    )

    async def call(_: Any) -> dict[str, Any]:
        await asyncio.sleep(delay)
        return answer

    codecs: dict[str, Any] = {}
    if response_codec:
        codecs["response_codec"] = nemo_relay.codecs.OpenAIChatCodec()
    if request_codec:
        codecs["codec"] = nemo_relay.codecs.OpenAIChatCodec()
    await nemo_relay.llm.execute(name, request, call, model_name="requested", **codecs)


async def tool(name: str, delay: float = 0.0) -> None:
    async def run(_: Any) -> Any:
        await asyncio.sleep(delay)
        return nemo_relay.ToolExecutionResult({"result": name})

    await nemo_relay.tools.execute(name, {"query": name}, run)


async def agent_workload() -> None:
    """Runs with every shape the mapping has to get right."""
    Agent, Function, Llm = (nemo_relay.ScopeType.Agent, nemo_relay.ScopeType.Function,
                            nemo_relay.ScopeType.Llm)  # fmt: skip
    with nemo_relay.scope.scope("planner", Agent):
        await llm("plan", response("m-1", tools=2), request_codec=True)
        await llm("plan", response(model=None, usage=None))  # no usage, no model
        await llm("raw", response("m-2"), response_codec=False)  # nothing annotated
        await tool("search")
        await asyncio.gather(  # parallel calls, same name, ending out of order
            llm("fan", response("slow", (1, 2, 3)), delay=0.03),
            llm("fan", response("fast", (4, 5, 9)), delay=0.01),
            tool("fetch", delay=0.02),
        )
        with nemo_relay.scope.scope("step", Function):
            await llm("inner", response("m-3", (7, 8, 15), tools=0))
            with nemo_relay.scope.scope("pseudo-llm", Llm):
                pass
        with nemo_relay.scope.scope("sub-agent", Agent):  # a run of its own
            await llm("sub-call", response("m-4"))
            await tool("sub-tool")
        await llm("after-sub", response("m-5", (2**31, 0, 2**31)))
    await llm("outside", response())  # outside any agent scope: no run
    for i in range(4):
        with nemo_relay.scope.scope("planner", Agent):
            for j in range(i + 1):
                await llm("step", response(f"m{j}", (10, 10 * j, 10 + 10 * j)))
            await tool("search")


def stored_by_nemo_relay(server: RedisServer, prefix: str) -> list[dict[str, Any]]:
    client = redis.Redis(port=server.port)
    keys = client.keys(f"{prefix}runs:*")
    return [orjson.loads(client.get(key)) for key in keys]  # type: ignore[arg-type]


def produced(kafka_broker, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in run_sync(read_all(kafka_broker.bootstrap, topic))]


def by_start(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: parse_timestamp_ns(r["started_at"]))


def without(record: dict[str, Any], *fields: str) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in fields}
    out["calls"] = [{k: v for k, v in c.items() if k not in fields} for c in record["calls"]]
    return out


#: what an end event sets on a call: NeMo Relay pairs it with the last opened call of the same
#: name, in the order events reach it, and now and then they reach it out of start order
END_FIELDS = ("ended_at", "output_tokens", "prompt_tokens", "total_tokens", "model_name",
              "tool_call_count", "annotated_response")  # fmt: skip


def paired_alike(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The records with each run's calls in start order and the parallel `fan` calls' end
    fields taken out, and those end fields on their own (sorted): what must be equal between
    the adapter and NeMo Relay however NeMo Relay paired the fan-out's ends."""
    normal, fan_ends = [], []
    for record in map(as_instants, records):
        calls = sorted(record["calls"], key=lambda c: c["started_at"])  # in start order
        for call in calls:
            if call["name"] == "fan":
                fan_ends.append(
                    orjson.dumps({k: call.get(k) for k in END_FIELDS}, option=orjson.OPT_SORT_KEYS)
                )
        calls = [without_end(c) if c["name"] == "fan" else c for c in calls]
        normal.append({**record, "calls": calls})
    return normal, sorted(fan_ends)


def as_instants(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its timestamps as integer ns: the same instant may be written with 6
    or 9 fraction digits (NeMo Relay drops trailing zeros, we do not), and both are RFC 3339."""

    def instants(fields: dict[str, Any]) -> dict[str, Any]:
        return {k: parse_timestamp_ns(v) if k.endswith("_at") else v for k, v in fields.items()}

    return {**instants(record), "calls": [instants(c) for c in record["calls"]]}


def in_start_order(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(calls, key=lambda c: parse_timestamp_ns(c["started_at"]))


def without_end(call: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in call.items() if k not in END_FIELDS}


def test_records_equal_what_nemo_relay_stores(kafka_broker, redis_server, tmp_path) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    full_topic = kafka_broker.create_topic(TopicNames.unique("nemo-full").runs, 1)
    plain_topic = kafka_broker.create_topic(TopicNames.unique("nemo").runs, 1)
    full = RunRecorder(kafka_broker.bootstrap, tmp_path / "full", topic=full_topic,
                       record_payloads=True, registry=None)  # fmt: skip
    registry = CollectorRegistry()
    plain = RunRecorder(kafka_broker.bootstrap, tmp_path / "plain", topic=plain_topic,
                        registry=registry)  # fmt: skip

    async def scenario() -> None:
        config = AdaptiveConfig(
            agent_id=AGENT_ID,
            state=StateConfig(BackendSpec.redis(redis_server.url, prefix)),
            telemetry=TelemetryConfig(learners=[]),  # record-only: NeMo Relay learns nothing
        )
        runtime = AdaptiveRuntime(config.to_dict())  # 0.10.4: a dict, not the dataclass
        await runtime.register()
        with (
            NemoRelayRecorder(full, agent_id=AGENT_ID, subscriber_name="hints-full"),
            NemoRelayRecorder(plain, subscriber_name="hints-plain") as adapter,
        ):
            await agent_workload()
            await nemo_relay.subscribers.flush_async()
            assert adapter.open_runs == 0
        runtime.wait_for_idle()
        await runtime.shutdown()

    asyncio.run(scenario())
    assert full.flush(timeout=60) and plain.flush(timeout=60)
    full.close()
    plain.close()

    theirs = by_start(stored_by_nemo_relay(redis_server, prefix))
    ours_full = by_start(produced(kafka_broker, full_topic))
    ours_plain = by_start(produced(kafka_broker, plain_topic))
    assert len(theirs) == 6  # the planner run, its sub-agent run, four more runs
    assert [len(r["calls"]) for r in theirs] == [10, 2, 2, 3, 4, 5]
    first = theirs[0]["calls"][0]  # what there is to match: usage, model, tool calls, payloads
    assert (first["output_tokens"], first["prompt_tokens"], first["total_tokens"]) == (120, 30, 150)
    assert (first["model_name"], first["tool_call_count"]) == ("m-1", 2)
    assert "annotated_request" in first and "annotated_response" in first
    # each parallel `fan` call with its own end: the slow one (30 ms) ended after the fast
    # one (10 ms) and lasted longer. Which of the two started first is not asserted: the
    # runtime may stamp the two starts in either order (seen in a fresh-clone run)
    fan = {c["model_name"]: c for c in ours_full[0]["calls"] if c["name"] == "fan"}
    assert sorted(fan) == ["fast", "slow"]
    (slow_start, slow_end), (fast_start, fast_end) = (
        (parse_timestamp_ns(fan[m]["started_at"]), parse_timestamp_ns(fan[m]["ended_at"]))
        for m in ("slow", "fast")
    )
    assert slow_end > fast_end and slow_end - slow_start > fast_end - fast_start
    assert all(r["calls"] == in_start_order(r["calls"]) for r in ours_full + ours_plain)

    # with payloads: equal to NeMo Relay's record in every field but the (fresh) run id
    assert paired_alike([without(r, "id") for r in ours_full]) == paired_alike(
        [without(r, "id") for r in theirs]
    )
    # the default leaves prompts and answers out, and names the agent after its scope
    payloads = ("annotated_request", "annotated_response", "agent_id")
    assert paired_alike([without(r, "id", *payloads) for r in ours_plain]) == paired_alike(
        [without(r, "id", *payloads) for r in theirs]
    )
    assert [r["agent_id"] for r in ours_plain] == ["planner", "sub-agent"] + ["planner"] * 4
    assert not any("annotated_response" in c for r in ours_plain for c in r["calls"])

    for record in ours_full + ours_plain:
        parsed = parse_run(orjson.dumps(record))
        assert parsed.id.version == 7
    their_ids = {r["id"] for r in theirs}
    assert not their_ids & {r["id"] for r in ours_full + ours_plain}
    assert registry.get_sample_value("agent_hints_recorder_runs_sent_total") == 6
