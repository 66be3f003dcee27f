"""NeMo Relay adapter: its scope events become run records on a `RunRecorder`.

A team already on NeMo Relay (`pip install nemo-relay`) switches its in-process learner off
(`TelemetryConfig(learners=[])`, or no adaptive telemetry at all) and registers this
subscriber instead:

    recorder = RunRecorder(bootstrap_servers="kafka:9092", spool_dir="/var/lib/agent/spool")
    relay = NemoRelayRecorder(recorder, agent_id="planner").register()
    ...                                  # agent code unchanged: scopes, llm.execute, tools
    relay.deregister(); recorder.close()

The mapping is the one NeMo Relay's own run accumulator uses (0.10.x), so the records equal,
call for call, what its storage backend keeps for the same runs:
- every Agent scope is a run (a nested Agent scope is a run of its own); its id is a fresh
  UUIDv7, not the scope's uuid; `agent_id` is the one given here, else the scope's name;
- LLM and Tool scopes inside it (through any other scopes) are its calls, in start order;
  each end is paired with its own scope (NeMo Relay pairs by name, last opened first, in the
  order events reach it, and so can swap the starts of parallel same-name calls);
  events outside any Agent scope are ignored;
- usage comes from the LLM end event's annotated response (set by a response codec):
  `completion_tokens` -> output_tokens, `prompt_tokens`, `total_tokens`; `model_name` from
  the response's `model`; `tool_call_count` from its `tool_calls`;
- annotated_request / annotated_response are kept only if the recorder records payloads.

Importing this module imports `nemo_relay`; `worker.recorder` itself does not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import nemo_relay

from worker.models.timestamps import parse_timestamp_ns
from worker.recorder.call import Call
from worker.recorder.checks import check_uint32
from worker.recorder.record import Run
from worker.recorder.recorder import RunRecorder

log = logging.getLogger(__name__)

DEFAULT_SUBSCRIBER_NAME = "agent-hints-recorder"
_CALL_KINDS = {"llm": "llm", "tool": "tool"}


def _log_error(error: Exception) -> None:
    log.error("NeMo Relay run not recorded: %s", error)


class NemoRelayRecorder:
    """A NeMo Relay subscriber recording each Agent scope as a run.

    `on_error` receives what recording a finished run raised (SpoolFullError...): the
    subscriber runs on NeMo Relay's publication thread, where raising would reach nobody.
    By default it is logged; the recorder's metrics count it either way."""

    def __init__(
        self,
        recorder: RunRecorder,
        *,
        agent_id: str | None = None,
        subscriber_name: str = DEFAULT_SUBSCRIBER_NAME,
        on_error: Callable[[Exception], None] = _log_error,
    ) -> None:
        self.recorder = recorder
        self.agent_id = agent_id
        self.subscriber_name = subscriber_name
        self.on_error = on_error
        self._lock = threading.Lock()
        #: open runs by their Agent scope's uuid
        self._runs: dict[str, Run] = {}
        #: scope / call uuid -> the uuid of the Agent scope (run) it belongs to
        self._roots: dict[str, str] = {}
        #: open calls by their scope uuid
        self._calls: dict[str, Call] = {}
        self._registered = False

    def register(self) -> NemoRelayRecorder:
        """Subscribe to NeMo Relay's events (`nemo_relay.subscribers.register`)."""
        nemo_relay.subscribers.register(self.subscriber_name, self.on_event)
        self._registered = True
        return self

    def deregister(self) -> None:
        """Unsubscribe; runs still open are dropped (as NeMo Relay drops unfinished runs)."""
        if self._registered:
            nemo_relay.subscribers.deregister(self.subscriber_name)
            self._registered = False
        with self._lock:
            if self._runs:
                log.warning("NeMo Relay adapter: %d unfinished runs dropped", len(self._runs))
            self._runs.clear()
            self._roots.clear()
            self._calls.clear()

    @property
    def open_runs(self) -> int:
        return len(self._runs)

    def on_event(self, event: Any) -> None:
        """The subscriber callback: one NeMo Relay event. Never raises."""
        try:
            if event.kind != "scope":
                return
            with self._lock:
                finished = self._apply(event)
            if finished is not None:
                finished[0].end(ended_at=finished[1])
        except Exception as exc:  # recording must never break the agent's event pipeline
            self.on_error(exc)

    def _apply(self, event: Any) -> tuple[Run, int] | None:
        """Update the open runs; returns a run that just ended (ended outside the lock)."""
        uuid: str = event.uuid
        starting = event.scope_category == "start"
        category: str = event.category
        if category == "agent":
            if starting:
                self._roots[uuid] = uuid
                self._runs[uuid] = self.recorder.run(
                    self.agent_id or event.name, started_at=parse_timestamp_ns(event.timestamp)
                )
                return None
            run = self._runs.pop(self._roots.pop(uuid, uuid), None)
            return None if run is None else (run, parse_timestamp_ns(event.timestamp))
        kind = _CALL_KINDS.get(category)
        if starting:
            root = self._root_of(event)
            if root is None:
                return None  # outside any Agent scope: not part of a run
            self._roots[uuid] = root
            run = self._runs.get(root)
            if kind is not None and run is not None:
                call = run.start_call(
                    "llm" if kind == "llm" else "tool",
                    event.name,
                    started_at=parse_timestamp_ns(event.timestamp),
                )
                self._calls[uuid] = call
                if kind == "llm":
                    request = (event.category_profile or {}).get("annotated_request")
                    if isinstance(request, dict):
                        call.set_payloads(request=request)
            return None
        self._roots.pop(uuid, None)
        ended = self._calls.pop(uuid, None)
        if ended is not None:
            if kind == "llm":
                _set_response(ended, (event.category_profile or {}).get("annotated_response"))
            ended.end(parse_timestamp_ns(event.timestamp))
        return None

    def _root_of(self, event: Any) -> str | None:
        root = self._roots.get(event.uuid)
        if root is None and event.parent_uuid is not None:
            root = self._roots.get(event.parent_uuid)
        return root

    def __enter__(self) -> NemoRelayRecorder:
        return self.register()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deregister()


def _set_response(call: Call, response: object) -> None:
    """Usage, model and tool calls from an annotated LLM response, as NeMo Relay reads them."""
    if not isinstance(response, dict):
        return
    usage = response.get("usage")
    if isinstance(usage, dict):
        call.output_tokens = _uint32_or_none(usage.get("completion_tokens"), "completion_tokens")
        call.prompt_tokens = _uint32_or_none(usage.get("prompt_tokens"), "prompt_tokens")
        call.total_tokens = _uint32_or_none(usage.get("total_tokens"), "total_tokens")
    model = response.get("model")
    if isinstance(model, str):
        try:
            call.set_model_name(model)
        except ValueError as exc:
            log.warning("NeMo Relay adapter: model name left out: %s", exc)
    tool_calls = response.get("tool_calls")
    if isinstance(tool_calls, list):
        call.tool_call_count = _uint32_or_none(len(tool_calls), "tool_calls")
    call.set_payloads(response=response)


def _uint32_or_none(value: object, what: str) -> int | None:
    try:
        return check_uint32(value, what)
    except ValueError as exc:
        log.warning("NeMo Relay adapter: %s left out: %s", what, exc)
        return None
