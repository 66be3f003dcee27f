"""The fast path's request heads: what it takes, what it leaves to aiohttp, what it sends on."""

from __future__ import annotations

import pytest

from worker.gateway.fast_head import parse

HEAD = (
    b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n"
    b"Host: gateway:8080\r\n"
    b"Content-Type: application/json\r\n"
    b"X-Agent-Id: planner\r\n"
    b"x-agent-id: second\r\n"
    b"Keep-Alive: timeout=5\r\n"
    b"Connection: keep-alive, X-Trace\r\n"
    b"X-Trace: 1\r\n"
    b"Accept:   */*  \r\n"
    b"Content-Length: 2"
)


def test_a_plain_head_is_read_with_lower_case_names_and_first_values() -> None:
    head = parse(HEAD)
    assert head is not None
    assert (head.method, head.target, head.path) == (
        "POST",
        "/v1/chat/completions?x=1",
        "/v1/chat/completions",
    )
    assert head.headers["x-agent-id"] == "planner"  # the first of two, as a multidict's get
    assert head.headers["accept"] == "*/*"  # surrounding whitespace is not the value
    assert head.length == 2 and head.keep_alive
    assert head.connection == {"keep-alive", "x-trace"}


def test_connection_close_ends_the_connection_after_the_answer() -> None:
    head = parse(b"GET /v1/models HTTP/1.1\r\nConnection: Close")
    assert head is not None and not head.keep_alive and head.length is None


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /v1/completions HTTP/1.0\r\nContent-Length: 2",  # HTTP/1.0: aiohttp's
        b"POST http://x/v1/completions HTTP/1.1",  # absolute form
        b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked",
        b"POST /v1/completions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2",
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade",
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3",
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: +2",
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n folded: line",
        b"POST /v1/completions HTTP/1.1\r\nX-Bad: a\x00b",
        b"POST /v1/completions HTTP/1.1\r\nX-Bad: a\rb",
        b"POST /v1/completions HTTP/1.1\r\nBad Name: x",
        b"POST /v1/completions HTTP/1.1\r\n: no name",
        b"post /v1/completions HTTP/1.1",  # not a method token as sent
        b"POST /v1/completions  HTTP/1.1",
        b"POST /v1/completions HTTP/1.1\r\n",  # an empty header line
    ],
)
def test_anything_unusual_is_left_to_aiohttp(raw: bytes) -> None:
    assert parse(raw) is None


def test_the_upstream_request_drops_hop_by_hop_headers_and_sets_host() -> None:
    head = parse(HEAD)
    assert head is not None
    sent = head.upstream("/base", "llm:8000", {}, b"{}", keep_length=True)
    text, _, body = sent.partition(b"\r\n\r\n")
    lines = text.decode().split("\r\n")
    assert lines[0] == "POST /base/v1/chat/completions?x=1 HTTP/1.1"
    assert lines[1] == "Host: llm:8000"
    names = [line.partition(":")[0].lower() for line in lines[1:]]
    assert "keep-alive" not in names and "connection" not in names
    assert "x-trace" not in names  # named by Connection: hop-by-hop too
    assert names.count("host") == 1 and names.count("content-length") == 1
    assert "Content-Length: 2" in lines and "X-Agent-Id: planner" in lines
    assert body == b"{}"


def test_added_headers_replace_the_callers_and_a_changed_body_gets_its_length() -> None:
    head = parse(HEAD)
    assert head is not None
    body = b'{"nvext": {}}'
    sent = head.upstream("", "llm", {"X-Agent-Id": "mine"}, body, keep_length=False)
    text, _, rest = sent.partition(b"\r\n\r\n")
    lines = text.decode().split("\r\n")
    assert [line for line in lines if line.lower().startswith("x-agent-id")] == ["X-Agent-Id: mine"]
    assert f"Content-Length: {len(body)}" in lines and "Content-Length: 2" not in lines
    assert rest == body


def test_a_body_without_a_declared_length_is_given_one() -> None:
    head = parse(b"POST /v1/completions HTTP/1.1\r\nHost: g")
    assert head is not None and head.length is None
    assert b"Content-Length: 0" not in head.upstream("", "u", {}, b"", keep_length=True)
    assert b"\r\nContent-Length: 2\r\n" in head.upstream("", "u", {}, b"{}", keep_length=True)
