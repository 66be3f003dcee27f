"""The gateway's fast path: the common request handled on bytes, everything else by aiohttp.

A request whose head is plain HTTP/1.1 (`fast_head`: a strict subset), whose body has a
Content-Length up to `max_body_bytes` (or no body), and that is not for the gateway's own
endpoints nor a HEAD is read whole, given its hints by the proxy (`HintsProxy.with_hints`, as on
aiohttp's path) and forwarded over a kept-alive upstream connection (`fast_exchange`).
Any other request (a chunked or larger body, `Expect`, `Upgrade`, HEAD, HTTP/1.0, a
malformed head, /healthz, /readyz, /metrics) hands its connection over to aiohttp's server,
which then serves it and every later request on it: the same behaviour, at aiohttp's cost.

Why: on this machine aiohttp's server and client cost ~1.5 ms of end-to-end latency per
proxied request beyond what a framing-only relay costs (docs/router.md), and the issue's
target is 1 ms for the whole hop; no setting of aiohttp's gets near it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from yarl import URL

from worker.gateway import fast_head
from worker.gateway.fast_exchange import Exchange
from worker.gateway.fast_upstream import UpstreamPool, set_nodelay
from worker.gateway.proxy import AGENT_HEADER, HINT_ROUTES, HintsProxy

log = logging.getLogger("worker.gateway")

#: the gateway's own endpoints: aiohttp's application answers them
LOCAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: methods whose requests go to aiohttp's path (a HEAD's answer has no body to read)
_SLOW_METHODS = frozenset({"HEAD", "CONNECT"})
#: a head longer than this goes to aiohttp (which answers 400 or 431 as it sees fit)
MAX_HEAD_BYTES = 32 * 1024
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 25\r\nConnection: close\r\n\r\n500 Internal Server Error"
)
#: stop reading a caller that sends ahead (pipelines) more than this while it waits
_READ_AHEAD_BYTES = 1 << 20


class FastPath:
    """What every fast connection shares: the proxy, the upstream pool, the hand-over."""

    def __init__(self, proxy: HintsProxy, handover: Callable[[], asyncio.Protocol]) -> None:
        config = proxy.config
        upstream = URL(config.upstream)
        self.proxy = proxy
        self.metrics = proxy.metrics
        self.max_body = config.max_body_bytes
        self.handover = handover
        self.want_usage = bool(proxy.observers)
        self.base_path = upstream.raw_path.rstrip("/")
        self.host = upstream.raw_authority
        assert upstream.host is not None and upstream.port is not None
        self.pool = UpstreamPool(
            upstream.host,
            upstream.port,
            connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.read_timeout_s,
        )
        self.callers: set[FastCaller] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def serves(upstream: str) -> bool:
        """The fast path speaks plain HTTP to the upstream only."""
        return URL(upstream).scheme == "http"

    def protocol(self) -> FastCaller:
        return FastCaller(self)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close idle connections, let requests under way end (up to `timeout_s`)."""
        for caller in list(self.callers):
            caller.close_when_idle()
        deadline = time.monotonic() + timeout_s
        while self.callers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for caller in list(self.callers):
            caller.abort()
        for task in list(self._tasks):
            task.cancel()
        self.pool.close()


class FastCaller(asyncio.Protocol):
    """One caller's connection: its requests one at a time (see the module docstring)."""

    def __init__(self, fast: FastPath) -> None:
        self.fast = fast
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.exchange: Exchange | None = None
        self.writing_paused = False
        self._reading_paused = False
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        set_nodelay(transport)
        self.fast.callers.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.exchange is None:
            self._next()
        elif len(self.buffer) > _READ_AHEAD_BYTES and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fast.callers.discard(self)
        self.transport = None
        if self.exchange is not None:
            self.exchange.caller_lost()
            self.exchange = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.exchange is not None and self.exchange.conn is not None:
            self.exchange.conn.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.exchange is not None and self.exchange.conn is not None:
            self.exchange.conn.resume_reading()

    # --- for the exchange -----------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """False when the caller has gone away."""
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def exchange_done(self, keep_alive: bool) -> None:
        self.exchange = None
        if self.transport is None:
            return
        if not keep_alive or self._closing:
            self.transport.close()
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        if self.buffer:
            self._next()

    def close_when_idle(self) -> None:
        self._closing = True
        if self.exchange is None and self.transport is not None:
            self.transport.close()

    # --- requests -------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start the buffered request once it is all there, or hand the connection over."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                self._hand_over()
            return
        head = fast_head.parse(bytes(buffer[:end]))
        length = 0 if head is None or head.length is None else head.length
        if (
            head is None
            or head.method in _SLOW_METHODS
            or head.path in LOCAL_PATHS
            or length > self.fast.max_body
        ):
            self._hand_over()  # aiohttp serves it: a large body streams through, bad ones 400
            return
        start = end + 4
        if len(buffer) < start + length:
            return  # the rest of the body is on its way
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        try:
            self._forward(head, body)
        except Exception:  # a bug of ours: answer 500 as aiohttp would, keep serving others
            log.exception("%s %s: internal error", head.method, head.path)
            self.exchange = None
            self.write(_INTERNAL_ERROR)
            if self.transport is not None:
                self.transport.close()

    def _forward(self, head: fast_head.RequestHead, body: bytes) -> None:
        """As `HintsProxy.handle`: the hints when the request gets any, then the hop."""
        started = time.perf_counter()
        fast = self.fast
        headers = head.headers
        path = head.path
        route = HINT_ROUTES.get(path) if head.method == "POST" else None
        agent_id = headers.get(AGENT_HEADER) if route is not None else None
        call = None
        data, keep_length = body, True
        added: dict[str, str] = {}
        if route is None or not agent_id:
            route = route or "other"
        else:
            call = fast.proxy.open_call(route, agent_id, headers)
            try:
                data, added, keep_length = fast.proxy.with_hints(call, headers, body)
            except BaseException:
                fast.proxy.close_call(call)
                raise
        request = head.upstream(fast.base_path, fast.host, added, data, keep_length=keep_length)
        self.exchange = Exchange(
            self,
            request,
            route,
            call,
            keep_alive=head.keep_alive,
            added_s=time.perf_counter() - started,
            target=f"{head.method} {path}",
        )
        self.exchange.start()

    def _hand_over(self) -> None:
        """aiohttp's server takes this connection, from the request not yet answered on."""
        transport = self.transport
        if transport is None:
            return
        self.fast.callers.discard(self)
        self.transport = None
        handler = self.fast.handover()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.buffer:
            data, self.buffer = bytes(self.buffer), bytearray()
            handler.data_received(data)
