"""A hook for whoever wants to see the LLM calls passing through (run recording, SPEC 9).

The gateway calls every registered `CallObserver` once per hint-eligible request (an agent
header on chat or completions) when its response is complete: the call starts when the
request arrives and ends when the last response byte went to the caller. `usage` and
`model` come from the response body, or for a streamed (SSE) response from its events (the
final usage chunk). Nothing is parsed unless an observer is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

#: a JSON response larger than this is not kept for its usage
MAX_JSON_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CompletedCall:
    """One LLM call as the gateway saw it."""

    agent_id: str
    run_id: str | None
    name: str | None
    #: chat_completions or completions
    route: str
    #: time.time_ns() when the request arrived and when the response was complete
    started_ns: int
    ended_ns: int
    #: HTTP status the caller got (the gateway's 502/504 when the upstream failed)
    status: int
    #: the response's `usage` object (prompt_tokens, completion_tokens, total_tokens)
    usage: dict[str, Any] | None
    #: the response's `model`
    model: str | None
    #: False when the response was cut short (upstream or caller went away)
    complete: bool = True


class CallObserver(Protocol):
    """Called on the event loop; keep it quick (queue the work, do not block)."""

    def call_completed(self, call: CompletedCall) -> None: ...


class ResponseUsage:
    """Finds `usage` and `model` in a response while its chunks are relayed."""

    def __init__(self, content_type: str) -> None:
        self.sse = content_type.startswith("text/event-stream")
        self._json = bytearray()
        self._line = bytearray()
        self._too_large = False
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None

    def feed(self, chunk: bytes) -> None:
        if self.sse:
            self._line += chunk
            *lines, rest = self._line.split(b"\n")
            self._line = bytearray(rest)
            for line in lines:
                self._event_line(bytes(line).strip())
        elif not self._too_large:
            self._json += chunk
            if len(self._json) > MAX_JSON_BYTES:
                self._too_large = True
                self._json = bytearray()

    def finish(self) -> None:
        if self.sse:
            self._event_line(bytes(self._line).strip())
        elif self._json:
            self._take(self._json)

    def _event_line(self, line: bytes) -> None:
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data and data != b"[DONE]":
                self._take(data)

    def _take(self, data: bytes | bytearray) -> None:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(value, dict):
            return
        if isinstance(value.get("usage"), dict):
            self.usage = value["usage"]
        if isinstance(value.get("model"), str):
            self.model = value["model"]
