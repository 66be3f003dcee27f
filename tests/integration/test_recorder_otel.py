"""The OpenTelemetry adapter with the real opentelemetry-sdk: GenAI spans (explicit times)
become run records in Kafka; a run whose span never ends is recorded by the idle sweep."""

from __future__ import annotations

import json
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry

from devtools.worker_process import TopicNames, read_all, run_sync
from worker.models.runs import parse_run_validated as parse_run  # models, for dict()
from worker.recorder import RunRecorder
from worker.recorder.otel import RunRecordingSpanProcessor

T0 = 1_800_000_000_000_000_000  # ns; every span below is timed explicitly from here


def call(kind: str, name: str, start: int, end: int | None, **fields: Any) -> dict[str, Any]:
    """A CallRecord as parse_run gives it (ns timestamps, every absent field None)."""
    empty = dict.fromkeys(
        ("output_tokens", "prompt_tokens", "total_tokens", "model_name", "tool_call_count",
         "metadata_snapshot", "annotated_request", "annotated_response")
    )  # fmt: skip
    ended = None if end is None else T0 + end
    return {"kind": kind, "name": name, "started_at": T0 + start, "ended_at": ended,
            **empty, **fields}  # fmt: skip


def run(agent_id: str, start: int, end: int, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"agent_id": agent_id, "calls": calls, "started_at": T0 + start, "ended_at": T0 + end}


def plain(record: Any) -> dict[str, Any]:
    """A parsed RunRecord as a dict with ns timestamps, without its id."""
    out = {k: v for k, v in dict(record).items() if k != "id"}
    out["calls"] = [dict(c) for c in record.calls]
    return out


class Spans:
    def __init__(self, provider: TracerProvider) -> None:
        self.tracer = provider.get_tracer("agent-under-test")

    def start(self, name: str, at: int, parent: Any = None, **attributes: Any) -> Any:
        context = Context() if parent is None else trace.set_span_in_context(parent)
        return self.tracer.start_span(
            name, context=context, start_time=T0 + at, attributes=attributes
        )

    def span(self, name: str, at: int, end: int, parent: Any = None, **attributes: Any) -> None:
        self.start(name, at, parent, **attributes).end(end_time=T0 + end)


def agent_traces(spans: Spans) -> None:
    op = "gen_ai.operation.name"
    # an agent invocation: LLM and tool calls, one under a plain span, a nested agent
    planner = spans.start("invoke_agent planner", 0, **{op: "invoke_agent",
                          "gen_ai.agent.name": "planner"})  # fmt: skip
    messages = [{"role": "assistant", "parts": [
        {"type": "text", "content": "let me look"},
        {"type": "tool_call", "id": "1", "name": "search", "arguments": {}},
        {"type": "tool_call", "id": "2", "name": "fetch", "arguments": {}}]}]  # fmt: skip
    spans.span("chat gpt-4o", 10, 50, planner, **{
        op: "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024",
        "gen_ai.usage.input_tokens": 30, "gen_ai.usage.output_tokens": 120,
        "gen_ai.output.messages": json.dumps(messages)})  # fmt: skip
    spans.span("execute_tool search", 55, 70, planner, **{op: "execute_tool",
               "gen_ai.tool.name": "search"})  # fmt: skip
    overlapping = spans.start("chat gpt-4o", 60, planner, **{op: "chat",
                              "gen_ai.request.model": "gpt-4o"})  # fmt: skip
    step = spans.start("step", 71, planner)
    spans.span("text_completion llama", 72, 80, step, **{op: "text_completion",
               "gen_ai.request.model": "llama", "gen_ai.usage.prompt_tokens": 5,
               "gen_ai.usage.completion_tokens": 7})  # fmt: skip
    spans.span("embeddings e5", 81, 82, step, **{op: "embeddings"})  # not a call
    step.end(end_time=T0 + 83)
    critic = spans.start("invoke_agent critic", 84, planner, **{op: "invoke_agent",
                         "gen_ai.agent.id": "critic-1"})  # fmt: skip
    spans.span("generate_content gemini", 85, 90, critic, **{op: "generate_content"})
    critic.end(end_time=T0 + 91)
    overlapping.end(end_time=T0 + 95)
    planner.end(end_time=T0 + 100)

    # a service handling a request from elsewhere (remote parent): its local root is the run
    remote = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True,
                                          trace_flags=TraceFlags(TraceFlags.SAMPLED)))  # fmt: skip
    handler = spans.start("POST /ask", 200, remote)
    spans.span("chat small", 210, 220, handler, **{op: "chat", "gen_ai.usage.output_tokens": 3})
    spans.span("chat small", 215, 230, handler, **{op: "chat"})
    handler.end(end_time=T0 + 240)

    # no GenAI span: not a run
    health = spans.start("GET /health", 300)
    spans.span("db query", 301, 302, health)
    health.end(end_time=T0 + 303)

    # a bare LLM call span is its trace's root: a run of one call
    spans.span("chat solo", 400, 410, None, **{op: "chat", "gen_ai.response.model": "m"})


def test_runs_from_genai_spans(kafka_broker, tmp_path) -> None:
    topic = kafka_broker.create_topic(TopicNames.unique("otel").runs, 1)
    registry = CollectorRegistry()
    recorder = RunRecorder(kafka_broker.bootstrap, tmp_path, topic=topic, registry=registry)
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    processor = RunRecordingSpanProcessor(recorder, idle_timeout_s=0.5, sweep_interval_s=0.1)
    provider.add_span_processor(processor)
    spans = Spans(provider)

    agent_traces(spans)
    # an agent span that never ends: recorded by the idle sweep, ending at its last call
    stuck = spans.start("invoke_agent stuck", 500, **{"gen_ai.operation.name": "invoke_agent",
                        "gen_ai.agent.name": "stuck"})  # fmt: skip
    spans.span("chat x", 510, 520, stuck, **{"gen_ai.operation.name": "chat"})
    assert processor.open_runs == 1
    deadline = time.monotonic() + 30
    while processor.open_runs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processor.open_runs == 0

    assert provider.force_flush(60_000)  # the processor's force_flush flushes the recorder
    provider.shutdown()
    recorder.close()
    records = [parse_run(r.value) for r in run_sync(read_all(kafka_broker.bootstrap, topic))]
    got = sorted((plain(r) for r in records), key=lambda r: r["started_at"])
    assert got == [
        run("planner", 0, 100, [
            call("llm", "chat gpt-4o", 10, 50, output_tokens=120, prompt_tokens=30,
                 total_tokens=150, model_name="gpt-4o-2024", tool_call_count=2),
            call("tool", "search", 55, 70),
            call("llm", "chat gpt-4o", 60, 95, model_name="gpt-4o"),
            call("llm", "text_completion llama", 72, 80, output_tokens=7, prompt_tokens=5,
                 total_tokens=12, model_name="llama"),
        ]),
        run("critic-1", 84, 91, [call("llm", "generate_content gemini", 85, 90)]),
        run("support-bot", 200, 240, [
            call("llm", "chat small", 210, 220, output_tokens=3),
            call("llm", "chat small", 215, 230),
        ]),
        run("support-bot", 400, 410, [call("llm", "chat solo", 400, 410, model_name="m")]),
        run("stuck", 500, 520, [call("llm", "chat x", 510, 520)]),
    ]  # fmt: skip
    assert all(r.id.version == 7 for r in records) and len({r.id for r in records}) == 5
    assert registry.get_sample_value("agent_hints_recorder_runs_sent_total") == 5


def test_fixed_agent_id_call_names_and_shutdown_records_open_runs(kafka_broker, tmp_path) -> None:
    topic = kafka_broker.create_topic(TopicNames.unique("otel2").runs, 1)
    recorder = RunRecorder(kafka_broker.bootstrap, tmp_path, topic=topic, registry=None)
    provider = TracerProvider()
    provider.add_span_processor(RunRecordingSpanProcessor(
        recorder, agent_id="fixed",
        call_name=lambda span: str((span.attributes or {})["gen_ai.request.model"]),
    ))  # fmt: skip
    spans = Spans(provider)
    root = spans.start("invoke_agent a", 0, **{"gen_ai.operation.name": "invoke_agent"})
    spans.span("chat m1", 1, 2, root, **{"gen_ai.operation.name": "chat",
               "gen_ai.request.model": "model-1"})  # fmt: skip
    provider.shutdown()  # the run's span never ended: recorded at shutdown
    assert recorder.flush(60)
    recorder.close()
    (record,) = [parse_run(r.value) for r in run_sync(read_all(kafka_broker.bootstrap, topic))]
    assert plain(record) == run("fixed", 0, 2, [call("llm", "model-1", 1, 2, model_name="model-1")])
