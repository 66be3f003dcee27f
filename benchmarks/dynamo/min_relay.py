"""A yardstick for the hop probe: the least a Python relay on uvloop can do per request.

It parses nothing but framing: a request with Content-Length goes on over one kept-alive
upstream connection per caller connection, and the answer (Content-Length or chunked) comes
back in one write. No hints, no HTTP library, no error handling: what any extra Python hop
costs on this machine, for comparing the gateway's added latency against, never for use.

    python -m benchmarks.dynamo.min_relay --upstream 127.0.0.1:8000 --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import cast

import uvloop

_END = b"\r\n\r\n"


def message_length(buf: bytes | bytearray) -> int:
    """The length of the whole HTTP/1.1 message at the start of `buf`; 0 while incomplete."""
    head_end = buf.find(_END)
    if head_end < 0:
        return 0
    head = bytes(buf[:head_end]).lower()
    body = head_end + len(_END)
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r\n", at + 2)
        size = int(head[at + 17 : line_end if line_end > 0 else None])
        return body + size if len(buf) >= body + size else 0
    if b"\r\ntransfer-encoding: chunked" in head:  # ends with a zero-size chunk
        last = buf.find(b"\r\n0\r\n\r\n", head_end)
        return last + 7 if last >= 0 else 0
    return body


class _Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        size = message_length(self.buf)
        if size and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(bytes(self.buf[:size]))
            del self.buf[:size]


class _Caller(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.buf = bytearray()
        self.upstream: _Upstream | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        size = message_length(self.buf)
        if size:
            request = bytes(self.buf[:size])
            del self.buf[:size]
            asyncio.get_running_loop().create_task(self.forward(request))

    async def forward(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self.upstream is None:
            _, self.upstream = await loop.create_connection(_Upstream, self.host, self.port)
        upstream = self.upstream
        upstream.waiter = loop.create_future()
        assert upstream.transport is not None and self.transport is not None
        upstream.transport.write(request)  # its Host header names the relay: no one checks
        self.transport.write(await upstream.waiter)


async def serve(upstream: str, port: int) -> None:
    host, _, up_port = upstream.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Caller(host, int(up_port)), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.upstream, args.port))  # as the gateway's event loop


if __name__ == "__main__":
    main()
