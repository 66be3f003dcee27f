"""OpenTelemetry adapter: a `SpanProcessor` that records runs from GenAI spans.

    provider = TracerProvider()
    provider.add_span_processor(RunRecordingSpanProcessor(recorder))

Spans follow the OpenTelemetry GenAI semantic conventions (`gen_ai.operation.name`):
- a run is an `invoke_agent` span (its own run when nested in another), or else the local
  root of a trace (its first span in this process) when GenAI calls happen under it;
- `chat`, `text_completion` and `generate_content` spans are LLM calls: name = the span's
  name (`"chat gpt-4o"`), `output_tokens` / `prompt_tokens` from `gen_ai.usage.output_tokens`
  / `gen_ai.usage.input_tokens` (or the deprecated `completion_tokens` / `prompt_tokens`),
  `total_tokens` their sum (the conventions have no total), `model_name` from
  `gen_ai.response.model` (else `gen_ai.request.model`), `tool_call_count` from the
  `tool_call` parts of `gen_ai.output.messages` when that opt-in attribute is there;
- `execute_tool` spans are tool calls, named by `gen_ai.tool.name` (else the span name);
- other spans only carry calls to their run; a call belongs to the nearest run above it.

A run is recorded when its span ends. A run whose span never ends (a crashed task, a root
left open) is recorded after `idle_timeout_s` without any of its spans starting or ending,
ending at its last call's end: the idle sweep. `gen_ai.operation.name` must be set when a
span starts (as the conventions ask) for an `invoke_agent` span to own the calls under it.

`agent_id`: the one given here, else the run span's `gen_ai.agent.name`, else its
`gen_ai.agent.id`, else the resource's `service.name`.

Importing this module imports `opentelemetry-sdk`; `worker.recorder` itself does not.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from worker.models import UINT32_MAX
from worker.recorder.recorder import RunRecorder

log = logging.getLogger(__name__)

OPERATION = "gen_ai.operation.name"
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
TOOL_OPERATION = "execute_tool"
AGENT_OPERATION = "invoke_agent"
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
MODEL = ("gen_ai.response.model", "gen_ai.request.model")
AGENT_ID = ("gen_ai.agent.name", "gen_ai.agent.id")


def _log_error(error: Exception) -> None:
    log.error("OpenTelemetry run not recorded: %s", error)


@dataclass
class _OpenRun:
    span: ReadableSpan
    is_agent: bool
    started_at: int
    last_seen: float
    calls: list[dict[str, Any]] = field(default_factory=list)


class RunRecordingSpanProcessor(SpanProcessor):
    """Records runs built from GenAI spans on a `RunRecorder` (see the module docstring).

    `call_name(span)` may name LLM calls differently (default: the span's name). Errors
    recording a finished run (SpoolFullError...) go to `on_error` (default: logged): span
    processing never raises into the instrumented code."""

    def __init__(
        self,
        recorder: RunRecorder,
        *,
        agent_id: str | None = None,
        idle_timeout_s: float = 300.0,
        sweep_interval_s: float | None = None,
        call_name: Callable[[ReadableSpan], str] | None = None,
        on_error: Callable[[Exception], None] = _log_error,
    ) -> None:
        if not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be positive, got {idle_timeout_s!r}")
        self.recorder = recorder
        self.agent_id = agent_id
        self.idle_timeout_s = idle_timeout_s
        self.call_name = call_name
        self.on_error = on_error
        self._lock = threading.Lock()
        self._runs: dict[int, _OpenRun] = {}  # by the run span's id
        self._owner: dict[int, int] = {}  # live span id -> its run's span id
        self._stop = threading.Event()
        interval = sweep_interval_s if sweep_interval_s is not None else min(idle_timeout_s / 4, 30)
        self._sweeper = threading.Thread(
            target=self._sweep_loop, args=(interval,), name="otel-run-sweeper", daemon=True
        )
        self._sweeper.start()

    # --- SpanProcessor ---------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            span_id = span.get_span_context().span_id
            parent = span.parent
            is_agent = (span.attributes or {}).get(OPERATION) == AGENT_OPERATION
            now = time.monotonic()
            with self._lock:
                owner = None
                if parent is not None and not parent.is_remote:
                    owner = self._owner.get(parent.span_id)
                if is_agent or owner is None or owner not in self._runs:
                    start = span.start_time or time.time_ns()
                    self._runs[span_id] = _OpenRun(span, is_agent, start, now)
                    owner = span_id
                else:
                    self._runs[owner].last_seen = now
                self._owner[span_id] = owner
        except Exception as exc:
            self.on_error(exc)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            context = span.get_span_context()
            if context is None:
                return
            span_id = context.span_id
            call = self._call_of(span)
            with self._lock:
                owner = self._owner.pop(span_id, None)
                run = self._runs.get(owner) if owner is not None else None
                if run is None:
                    return  # started before this processor, or its run was swept
                run.last_seen = time.monotonic()
                if call is not None:
                    run.calls.append(call)
                if span_id != owner:
                    return
                del self._runs[owner]
            self._record(run, span, span.end_time)
        except Exception as exc:
            self.on_error(exc)

    def shutdown(self) -> None:
        """Stop the sweeper and record every open run that has calls (its span never ended)."""
        self._stop.set()
        if self._sweeper.is_alive() and threading.current_thread() is not self._sweeper:
            self._sweeper.join(5)
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
            self._owner.clear()
        for run in runs:
            self._record_idle(run)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the recorder has sent every run recorded so far."""
        return self.recorder.flush(timeout_millis / 1000)

    # --- runs ------------------------------------------------------------------------------

    @property
    def open_runs(self) -> int:
        return len(self._runs)

    def sweep(self, now: float | None = None) -> int:
        """Record the runs idle for `idle_timeout_s`; returns how many were taken."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [key for key, run in self._runs.items()
                    if now - run.last_seen >= self.idle_timeout_s]  # fmt: skip
            runs = [self._runs.pop(key) for key in idle]
            if runs:
                gone = set(idle)
                self._owner = {s: o for s, o in self._owner.items() if o not in gone}
        for run in runs:
            self._record_idle(run)
        return len(runs)

    def _sweep_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sweep()
            except Exception as exc:
                self.on_error(exc)

    def _record_idle(self, run: _OpenRun) -> None:
        ends = [c["ended_at"] for c in run.calls if c.get("ended_at") is not None]
        if not run.calls:
            return
        log.info("OpenTelemetry adapter: run span %r never ended; recorded as idle", run.span.name)
        self._record(run, run.span, max(ends) if ends else None)

    def _record(self, run: _OpenRun, span: ReadableSpan, ended_at: int | None) -> None:
        if not run.calls and not run.is_agent:
            return  # a trace without GenAI calls is not an agent run
        try:
            recorded = self.recorder.run(self._agent_id(span), started_at=run.started_at)
            for call in run.calls:
                recorded.add_call(**call)
            end = run.started_at if ended_at is None else max(ended_at, run.started_at)
            recorded.end(ended_at=end)
        except Exception as exc:
            self.on_error(exc)

    def _agent_id(self, span: ReadableSpan) -> str:
        if self.agent_id:
            return self.agent_id
        attributes = span.attributes or {}
        for key in AGENT_ID:
            value = attributes.get(key)
            if isinstance(value, str) and value:
                return value
        service = span.resource.attributes.get("service.name") if span.resource else None
        return str(service) if service else "unknown_service"

    def _call_of(self, span: ReadableSpan) -> dict[str, Any] | None:
        """add_call() arguments for a GenAI call span, or None for any other span."""
        attributes = span.attributes or {}
        operation = attributes.get(OPERATION)
        if operation == TOOL_OPERATION:
            name = attributes.get("gen_ai.tool.name")
            return {
                "kind": "tool",
                "name": name if isinstance(name, str) else span.name,
                "started_at": span.start_time,
                "ended_at": span.end_time,
            }
        if operation not in LLM_OPERATIONS:
            return None
        output_tokens = _uint32(_first(attributes, OUTPUT_TOKENS))
        prompt_tokens = _uint32(_first(attributes, INPUT_TOKENS))
        total = None
        if output_tokens is not None and prompt_tokens is not None:
            total = _uint32(output_tokens + prompt_tokens)
        model = _first(attributes, MODEL)
        return {
            "kind": "llm",
            "name": self.call_name(span) if self.call_name else span.name,
            "started_at": span.start_time,
            "ended_at": span.end_time,
            "output_tokens": output_tokens,
            "prompt_tokens": prompt_tokens,
            "total_tokens": total,
            "model_name": model if isinstance(model, str) else None,
            "tool_call_count": _tool_calls(attributes.get("gen_ai.output.messages")),
        }


def _first(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def _uint32(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT32_MAX:
        return None
    return value


def _tool_calls(messages: object) -> int | None:
    """Tool-call parts in `gen_ai.output.messages` (a JSON string), if recorded."""
    if not isinstance(messages, str):
        return None
    try:
        decoded = json.loads(messages)
    except ValueError:
        return None
    if not isinstance(decoded, list):
        return None
    return sum(
        1
        for message in decoded
        if isinstance(message, dict)
        for part in message.get("parts") or ()
        if isinstance(part, dict) and part.get("type") == "tool_call"
    )
