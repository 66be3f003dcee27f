"""Usage and model from responses, and the usage chunk the gateway asked for, stripped again."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from worker.gateway.response_usage import ResponseUsage, ask_for_stream_usage

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def event(value: dict[str, Any] | str, end: bytes = b"\n\n") -> bytes:
    return b"data: " + (value.encode() if isinstance(value, str) else orjson.dumps(value)) + end


def sse(*events: dict[str, Any] | str, end: bytes = b"\n\n") -> bytes:
    return b"".join(event(e, end) for e in events)


def relay(tap: ResponseUsage, stream: bytes, chunk: int) -> bytes:
    """What the proxy relays for `stream` arriving in pieces of `chunk` bytes."""
    out = [tap.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)]
    return b"".join(out) + tap.finish()


CONTENT = {"model": "m1", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
FINISH = {"model": "m1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
USAGE_CHUNK = {"model": "m1", "choices": [], "usage": USAGE}


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_usage_from_an_sse_stream_in_any_chunking(chunk: int) -> None:
    stream = sse(CONTENT, USAGE_CHUNK, "[DONE]")
    tap = ResponseUsage("text/event-stream; charset=utf-8")
    assert relay(tap, stream, chunk) == stream  # not stripping: every byte as it came
    assert tap.usage == USAGE and tap.model == "m1"


@pytest.mark.parametrize("end", [b"\n\n", b"\r\n\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("chunk", [1, 2, 5, 33, 10_000])
def test_strip_drops_only_the_usage_event_in_any_chunking(chunk: int, end: bytes) -> None:
    wanted = sse(CONTENT, CONTENT, FINISH, end=end)
    stream = wanted + event(USAGE_CHUNK, end) + event("[DONE]", end)
    tap = ResponseUsage("text/event-stream", strip=True)
    assert relay(tap, stream, chunk) == wanted + event("[DONE]", end)
    assert tap.usage == USAGE and tap.model == "m1"


def test_strip_relays_whole_events_as_soon_as_they_are_complete() -> None:
    tap = ResponseUsage("text/event-stream", strip=True)
    first = event(CONTENT)
    assert tap.feed(first[:10]) == b""  # held: not a whole event yet
    assert tap.feed(first[10:] + event(CONTENT)[:4]) == first
    assert tap.feed(event(CONTENT)[4:]) == event(CONTENT)


def test_strip_keeps_events_that_carry_content_or_no_usage() -> None:
    with_content = {"model": "m", "choices": [{"index": 0, "text": "x"}], "usage": USAGE}
    null_usage = {"model": "m", "choices": [], "usage": None}
    stream = sse(with_content, null_usage, "not json", "[DONE]") + b": comment\n\n"
    tap = ResponseUsage("text/event-stream", strip=True)
    assert relay(tap, stream, 3) == stream
    assert tap.usage == USAGE


def test_a_last_event_without_its_blank_line_is_relayed_or_stripped() -> None:
    tap = ResponseUsage("text/event-stream", strip=True)
    assert relay(tap, sse(CONTENT) + b"data: [DONE]", 4) == sse(CONTENT) + b"data: [DONE]"
    tap = ResponseUsage("text/event-stream", strip=True)
    stream = sse(CONTENT) + b"data: " + orjson.dumps(USAGE_CHUNK)
    assert relay(tap, stream, 4) == sse(CONTENT)
    assert tap.usage == USAGE


def test_strip_applies_to_event_streams_only() -> None:
    body = orjson.dumps({"model": "m2", "usage": USAGE, "choices": []})
    tap = ResponseUsage("application/json", strip=True)
    assert relay(tap, body, 10) == body
    assert tap.usage == USAGE and tap.model == "m2"


def test_nothing_from_junk() -> None:
    junk = ResponseUsage("application/json")
    assert relay(junk, b"<html>bad gateway</html>", 5) == b"<html>bad gateway</html>"
    assert junk.usage is None and junk.model is None
    stream = ResponseUsage("text/event-stream", strip=True)
    data = b"data: {not json}\n\ndata: [1]\n\n: comment\n\ndata:\n\n"
    assert relay(stream, data, 3) == data
    assert stream.usage is None and stream.model is None


@pytest.mark.parametrize(
    ("body", "changed", "after"),
    [
        ({"stream": True}, True, {"stream": True, "stream_options": {"include_usage": True}}),
        (
            {"stream": True, "stream_options": {"include_usage": False, "x": 1}},
            True,
            {"stream": True, "stream_options": {"include_usage": True, "x": 1}},
        ),
        (
            {"stream": True, "stream_options": {"include_usage": True}},
            False,
            {"stream": True, "stream_options": {"include_usage": True}},
        ),
        ({"stream": False}, False, {"stream": False}),
        ({}, False, {}),
        ({"stream": "yes"}, False, {"stream": "yes"}),
        ({"stream": True, "stream_options": "x"}, False, {"stream": True, "stream_options": "x"}),
    ],
    ids=["absent", "false", "already", "not-streamed", "no-stream", "odd-stream", "odd-options"],
)
def test_ask_for_stream_usage(body: dict[str, Any], changed: bool, after: dict[str, Any]) -> None:
    assert ask_for_stream_usage(body) is changed
    assert body == after
