"""The fast path's upstream side: kept-alive HTTP/1.1 connections to a plain-http upstream.

Each connection carries one exchange at a time: the request leaves in one write, the answer
is parsed by httptools (llhttp, the parser uvicorn uses) straight into the exchange's
callbacks (`fast_exchange.Exchange`), which relays it as it arrives. A connection whose
answer ended cleanly and that the upstream keeps alive goes back to the pool.

Why not aiohttp's client here: per request it builds a ClientRequest, a ClientResponse, a
StreamReader, timers and a task hand-over; on this machine that costs ~0.5-0.7 ms of the
hop's end-to-end latency (docs/router.md), more than the whole target leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Protocol

import httptools


class ResponseSink(Protocol):
    """Where a connection delivers an answer (httptools' callbacks, and the rest)."""

    #: the upstream keeps the connection open after this answer (read at its headers:
    #: llhttp forgets it once the message is complete)
    upstream_keep_alive: bool

    def on_status(self, status: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...

    def flushed(self) -> bool:
        """One read of the upstream was parsed: relay what it gave; True once complete."""

    def upstream_failed(self, exc: BaseException, *, retry: bool) -> None:
        """The answer cannot be completed (`retry`: a reused connection closed before any
        byte of it, so the request may go again on a fresh one)."""

    def upstream_closed(self) -> bool:
        """The upstream closed the connection: True when that ends the answer (a body
        delimited by the connection's end), else the exchange is told `upstream_failed`."""


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # not TCP (a test's transport)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class UpstreamConnection(asyncio.Protocol):
    """One connection to the upstream (see the module docstring)."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.lost = False
        #: an exchange ran on it before (a stale kept-alive connection may be closed)
        self.reused = False
        self._got_bytes = False
        self._paused = False
        #: when the upstream last sent anything for the exchange under way (loop time)
        self.last_read = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        set_nodelay(transport)

    def send(self, sink: ResponseSink, request: bytes) -> None:
        """Send `request` (head and body); its answer goes to `sink`."""
        assert self.transport is not None and self.sink is None
        self.sink = sink
        if self._paused:  # held back for the previous exchange's slow caller
            self.resume_reading()
        self.transport.write(request)
        # the answer cannot arrive before this returns to the loop: set up after sending
        self.parser = httptools.HttpResponseParser(sink)
        self._got_bytes = False
        self.last_read = self.pool.busy(self)

    def data_received(self, data: bytes) -> None:
        sink, parser = self.sink, self.parser
        if sink is None or parser is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self._got_bytes = True
        self.last_read = self.pool.loop_time()
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            return
        if sink.flushed():
            keep = sink.upstream_keep_alive
            self._end_exchange()
            if keep and not self.lost:
                self.reused = True
                self.pool.idle.append(self)
            else:
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        sink = self.sink
        if sink is None:
            return
        if self._got_bytes and sink.upstream_closed():
            self._end_exchange()
            return
        retry = self.reused and not self._got_bytes
        self._fail(exc or ConnectionResetError("the upstream closed the connection"), retry)

    def pause_reading(self) -> None:
        """Hold the answer back while its caller does not keep up (SSE to a slow reader)."""
        if self.transport is not None and not self.lost:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close without telling the exchange (it has ended, or it closes us)."""
        self.lost = True  # never reused
        self._end_exchange()
        if self.transport is not None:
            self.transport.close()

    def timed_out(self) -> None:
        """The upstream has been silent past the read timeout."""
        self._fail(TimeoutError("the upstream did not answer in time"))

    def _fail(self, exc: BaseException, retry: bool = False) -> None:
        sink = self.sink
        self._end_exchange()
        if self.transport is not None:
            self.transport.close()
        if sink is not None:
            sink.upstream_failed(exc, retry=retry)

    def _end_exchange(self) -> None:
        self.sink = self.parser = None
        self.pool.idle_now(self)


class UpstreamPool:
    """Idle kept-alive connections to one host and port, and new ones when none is idle."""

    def __init__(
        self, host: str, port: int, *, connect_timeout_s: float, read_timeout_s: float
    ) -> None:
        self.host, self.port = host, port
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.idle: list[UpstreamConnection] = []
        #: connections with an exchange under way, watched for the read timeout
        self._busy: set[UpstreamConnection] = set()
        self._watch: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop_time(self) -> float:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.time()

    def busy(self, conn: UpstreamConnection) -> float:
        """`conn` sent a request: watch it for the read timeout; the loop's time now.

        One timer for the pool, checking every quarter of the timeout (at most every
        second), instead of one per request: uvloop closes a cancelled timer's libuv
        handle in an extra turn of the loop, an extra wake-up on every request."""
        now = self.loop_time()
        self._busy.add(conn)
        if self._watch is None:
            assert self._loop is not None
            self._watch = self._loop.call_at(now + self._tick_s(), self._check)
        return now

    def idle_now(self, conn: UpstreamConnection) -> None:
        self._busy.discard(conn)

    def _tick_s(self) -> float:
        return min(1.0, self.read_timeout_s / 4)

    def _check(self) -> None:
        self._watch = None
        if not self._busy:
            return
        now = self.loop_time()
        for conn in [c for c in self._busy if now - c.last_read >= self.read_timeout_s]:
            conn.timed_out()
        if self._busy:
            assert self._loop is not None
            self._watch = self._loop.call_at(now + self._tick_s(), self._check)

    def take_idle(self) -> UpstreamConnection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.lost:
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection (TimeoutError past the connect timeout, OSError when refused)."""
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port),
            self.connect_timeout_s,
        )
        return conn

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
