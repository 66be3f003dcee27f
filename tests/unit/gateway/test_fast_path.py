"""The gateway's fast path on real local sockets: kept-alive upstream connections, how an
answer's end is found, retries of a stale connection, pipelining, and the hand-over of
unusual requests to aiohttp's server on the same connection. (No Kafka: the hints view
never loads, so requests go without hints, which is all these tests need.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from unittest import mock

import orjson
import pytest

from devtools.fake_upstream import FakeUpstream
from worker.client import HintsClient
from worker.gateway import GatewayConfig, GatewayServer
from worker.gateway.fast_upstream import UpstreamConnection, UpstreamPool

#: what the raw upstream answers a request with: (bytes to send or None, then close?)
Answer = Callable[[bytes, int], tuple[bytes | None, bool]]
#: raw upstreams started by the test under way (the fixture closes them)
_RUNNING: list[RawUpstream] = []
#: callers' connections opened by the test under way (the fixture closes them)
_CALLERS: list[asyncio.StreamWriter] = []


class RawUpstream:
    """An upstream on bare sockets: the exact bytes it answers, its connections counted."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []

    async def start(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        _RUNNING.append(self)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                request = head + await reader.readexactly(int(found[1]) if found else 0)
                self.requests.append(request)
                reply, close = self.answer(request, len(self.requests))
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"".join(extra)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n" % path.encode()
        + b"".join(extra)
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one response, chunked or not."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head[:-4].split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


@asynccontextmanager
async def gateway(upstream: str) -> AsyncIterator[GatewayServer]:
    """A gateway in front of `upstream`; closes what the test opened when it ends."""
    client = HintsClient("127.0.0.1:9", hints_topic="h", tries_topic="t")
    server = GatewayServer(GatewayConfig(upstream=upstream, port=0), client)
    await server.start()
    try:
        yield server
    finally:
        while _CALLERS:
            _CALLERS.pop().close()
        await server.stop()
        while _RUNNING:
            raw = _RUNNING.pop()
            raw.server.close()
            await raw.server.wait_closed()


async def connect(server: GatewayServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    _CALLERS.append(writer)
    return reader, writer


async def test_requests_share_one_kept_alive_upstream_connection() -> None:
    upstream = await RawUpstream(lambda req, n: (ok(b'{"n": %d}' % n), False)).start()
    async with gateway(upstream.url) as server:
        reader, writer = await connect(server)
        for n in (1, 2, 3):
            writer.write(
                post("/v1/chat/completions", b'{"model": "m"}', b"Connection: keep-alive\r\n")
            )
            status, headers, body = await read_response(reader)
            assert (status, body) == (200, b'{"n": %d}' % n)
            assert headers["content-length"] == str(len(body))
        assert upstream.connections == 1
        for request in upstream.requests:
            assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
            host = upstream.url.removeprefix("http://").encode()
            assert re.findall(rb"(?i)\r\nhost: ([^\r]*)", request) == [host]
            assert b"keep-alive" not in request.lower() and request.endswith(b'{"model": "m"}')
        writer.close()


async def test_an_answer_ended_by_the_upstreams_close_is_relayed_whole() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe whole answer"
    upstream = await RawUpstream(lambda req, n: (answer, True)).start()
    async with gateway(upstream.url) as server:
        reader, writer = await connect(server)
        for _ in range(2):
            writer.write(post("/v1/completions", b"{}"))
            status, headers, body = await read_response(reader)
            assert (status, body) == (200, b"the whole answer")
            assert headers["transfer-encoding"] == "chunked"
        assert upstream.connections == 2  # a connection the upstream closed is not reused
        writer.close()


async def test_a_stale_kept_alive_connection_is_retried_once() -> None:
    # the upstream drops its kept-alive connection as the second request arrives on it
    def answer(request: bytes, n: int) -> tuple[bytes | None, bool]:
        return (None, True) if n == 2 else (ok(b'{"n": %d}' % n), False)

    upstream = await RawUpstream(answer).start()
    async with gateway(upstream.url) as server:
        reader, writer = await connect(server)
        for expected in (1, 3):
            writer.write(post("/v1/completions", b"{}"))
            status, _, body = await read_response(reader)
            assert (status, body) == (200, b'{"n": %d}' % expected)
        assert upstream.connections == 2 and len(upstream.requests) == 3
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    upstream = await RawUpstream(
        lambda req, n: (ok(req[req.index(b"\r\n\r\n") + 4 :]), False)
    ).start()
    async with gateway(upstream.url) as server:
        reader, writer = await connect(server)
        writer.write(post("/v1/completions", b'"a"') + post("/v1/completions", b'"b"'))
        assert (await read_response(reader))[2] == b'"a"'
        assert (await read_response(reader))[2] == b'"b"'
        writer.close()


async def test_a_callers_connection_close_is_honoured() -> None:
    upstream = await RawUpstream(lambda req, n: (ok(b"{}"), False)).start()
    async with gateway(upstream.url) as server:
        reader, writer = await connect(server)
        writer.write(post("/v1/completions", b"{}", b"Connection: close\r\n"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await reader.read() == b""  # closed by the gateway
        writer.close()


async def test_unusual_requests_hand_the_connection_to_aiohttp() -> None:
    upstream = await FakeUpstream().start()
    try:
        async with gateway(upstream.url) as server:
            reader, writer = await connect(server)
            chunked = (
                b"POST /echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
            )
            # fast, then chunked (aiohttp's from here on), then fast-looking but aiohttp's
            for request, body in (
                (post("/echo", b"one"), "one"),
                (chunked, "abcdef"),
                (post("/echo", b"three"), "three"),
            ):
                writer.write(request)
                status, _, answer = await read_response(reader)
                assert status == 200 and orjson.loads(answer)["body"] == body
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            status, _, answer = await read_response(reader)
            assert status == 200 and orjson.loads(answer)["status"] == "ok"
            writer.close()
            # the gateway's own endpoints and malformed heads on a fresh connection
            reader, writer = await connect(server)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert (await read_response(reader))[0] == 503  # no view: not ready
            writer.close()
            reader, writer = await connect(server)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: gw\r\n folded\r\nContent-Length: 0\r\n\r\n")
            assert (await read_response(reader))[0] == 400
            writer.close()
    finally:
        await upstream.stop()


async def test_a_bug_in_the_hints_answers_500_and_the_gateway_serves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream = await RawUpstream(lambda req, n: (ok(b"{}"), False)).start()
    async with gateway(upstream.url) as server:

        def broken(*args: object) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(server.proxy, "with_hints", broken)
        reader, writer = await connect(server)
        writer.write(post("/v1/chat/completions", b"{}", b"x-agent-id: planner\r\n"))
        assert (await read_response(reader))[0] == 500
        assert await reader.read() == b""
        reader, writer = await connect(server)
        writer.write(post("/v1/chat/completions", b"{}"))  # no agent: no hints, forwarded
        assert (await read_response(reader))[:1] == (200,)
        assert len(upstream.requests) == 1


async def test_a_slow_caller_holds_the_upstream_back_and_the_connection_serves_on() -> None:
    big = b"x" * (8 << 20)
    upstream = await RawUpstream(lambda req, n: (ok(big if n == 1 else b"{}"), False)).start()
    async with gateway(upstream.url) as server:
        reader, writer = await connect(server)
        writer.write(post("/v1/completions", b"{}"))
        await asyncio.sleep(0.5)  # not reading: the gateway's writes to us back up
        assert (await read_response(reader))[2] == big
        writer.write(post("/v1/completions", b"{}"))
        status, _, body = await asyncio.wait_for(read_response(reader), 5)
        assert (status, body) == (200, b"{}")
        assert upstream.connections == 1  # the connection held back is read again


class _Transport:
    def __init__(self) -> None:
        self.reading = True
        self.written: list[bytes] = []

    def get_extra_info(self, name: str) -> None:
        return None

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)


async def test_a_connection_held_back_for_a_slow_caller_reads_again_for_the_next() -> None:
    pool = UpstreamPool("127.0.0.1", 9, connect_timeout_s=1, read_timeout_s=60)
    conn = UpstreamConnection(pool)
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.pause_reading()  # the last exchange's caller did not keep up when it ended
    assert not transport.reading
    conn.send(mock.Mock(), b"GET / HTTP/1.1\r\n\r\n")
    assert transport.reading and transport.written == [b"GET / HTTP/1.1\r\n\r\n"]
    pool.close()
