"""Usage and model from a response while it is relayed; and the usage chunk the gateway asked for.

A completion's `usage` (prompt_tokens, completion_tokens, total_tokens) and `model` are in
its JSON body, or for a streamed (SSE) completion in its events: `usage` in the final chunk
when the request set `stream_options.include_usage`. When the gateway itself asked the
upstream for that chunk (the client did not: see `ask_for_stream_usage`), `strip` removes it
again, so the client receives the stream it asked for. Events are then relayed whole: a
partial event waits for its end (an SSE client acts on whole events anyway).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

#: a JSON response larger than this is not kept for its usage
MAX_JSON_BYTES = 4 * 1024 * 1024
#: an SSE event ends with a blank line (LF or CRLF line ends)
_EVENT_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_INCLUDE_USAGE = "include_usage"


def ask_for_stream_usage(body: dict[str, Any]) -> bool:
    """Make a streamed request ask for the usage chunk; True when `body` was changed.

    Unchanged: a request that does not stream, one that already asks, and one whose
    `stream_options` is not a JSON object (the caller's business, forwarded as sent)."""
    if body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if options is None:
        body["stream_options"] = {_INCLUDE_USAGE: True}
        return True
    if not isinstance(options, dict) or options.get(_INCLUDE_USAGE) is True:
        return False
    options[_INCLUDE_USAGE] = True
    return True


class ResponseUsage:
    """Finds `usage` and `model` in a response's chunks; with `strip`, also drops the SSE
    usage-only event (`"choices": []` with a `usage` object) from what is relayed."""

    __slots__ = ("_json", "_pending", "_too_large", "model", "sse", "strip", "usage")

    def __init__(self, content_type: str, *, strip: bool = False) -> None:
        self.sse = content_type.startswith("text/event-stream")
        self.strip = strip and self.sse
        self._json = bytearray()
        self._pending = b""
        self._too_large = False
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Note what `chunk` says; returns the bytes to relay now (`chunk` itself unless
        stripping, which holds back a partial event)."""
        if self.sse:
            return self._feed_events(chunk)
        if not self._too_large:
            self._json += chunk
            if len(self._json) > MAX_JSON_BYTES:
                self._too_large = True
                self._json = bytearray()
        return chunk

    def finish(self) -> bytes:
        """The response ended: what is still to relay (a last event without its blank line)."""
        if self.sse:
            rest, self._pending = self._pending, b""
            if rest and self._event(rest) and self.strip:
                return b""
            return rest
        if self._json:
            value = _loads(self._json)
            if value is not None:
                self._note(value)
        return b""

    def _feed_events(self, chunk: bytes) -> bytes:
        data = self._pending + chunk if self._pending else chunk
        start = 0
        kept: list[bytes] = []
        for match in _EVENT_END.finditer(data):
            end = match.end()
            usage_only = self._event(data[start:end])
            if not (usage_only and self.strip):
                kept.append(data[start:end])
            start = end
        self._pending = data[start:]
        if not self.strip:
            return chunk
        if len(kept) == 1:
            return kept[0]
        return b"".join(kept)

    def _event(self, event: bytes) -> bool:
        """Note the event's usage and model; True when it is a usage-only event."""
        if self.model is not None and b'"usage"' not in event:
            return False  # a content chunk once the model is known: nothing to learn
        payload = b"\n".join(
            line[5:].lstrip(b" ") for line in _LINE_END.split(event) if line.startswith(b"data:")
        )
        if not payload or payload == b"[DONE]":
            return False
        value = _loads(payload)
        if value is None:
            return False
        self._note(value)
        return value.get("choices") == [] and isinstance(value.get("usage"), dict)

    def _note(self, value: dict[str, Any]) -> None:
        usage = value.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        model = value.get("model")
        if isinstance(model, str):
            self.model = model


def _loads(data: bytes | bytearray) -> dict[str, Any] | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
