"""One request on the fast path: sent to the upstream, its answer relayed as it arrives.

What the relay (`relay.UpstreamRelay`) does for aiohttp's path, done on bytes: status and
headers (less hop-by-hop ones) as the upstream sent them; the body of each upstream read in
one write to the caller, the response head with the first body bytes (event streams: at
once) and the end of the response with the last bytes; a body with a Content-Length keeps
it, any other (chunked, ended by the connection's close, or changed by usage stripping)
goes chunked. An upstream that cannot be reached answers 502, one that stays silent past
`read_timeout_s` 504, as OpenAI-style error bodies; an answer cut short is cut short for
the caller too (the connection is aborted).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson

from worker.gateway.fast_upstream import UpstreamConnection
from worker.gateway.headers import HOP_BY_HOP
from worker.gateway.observer import NO_RESPONSE
from worker.gateway.relay import upstream_error
from worker.gateway.response_usage import ResponseUsage

if TYPE_CHECKING:
    from worker.gateway.fast_server import FastCaller
    from worker.gateway.proxy import Call

log = logging.getLogger("worker.gateway")

_LAST_CHUNK = b"0\r\n\r\n"
_NO_BODY = frozenset({204, 304})


class Exchange:
    """Implements `fast_upstream.ResponseSink` for one caller's request."""

    def __init__(
        self,
        caller: FastCaller,
        request: bytes,
        route: str,
        call: Call | None,
        *,
        keep_alive: bool,
        added_s: float,
        target: str,
    ) -> None:
        self.caller = caller
        self.fast = caller.fast
        self.request = request
        self.route = route
        self.call = call
        self.keep_alive = keep_alive
        self.added_s = added_s
        #: "METHOD path", for log lines
        self.target = target
        self.conn: UpstreamConnection | None = None
        self.status = NO_RESPONSE
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: bytes | None = None
        self._head_at = 0.0
        self._head_sent = False
        self._sse = False
        self._chunked = False
        #: the upstream's body ends with its connection (neither length nor chunked)
        self._until_close = False
        self._usage: ResponseUsage | None = None
        self._body: list[bytes] = []
        self._complete = False
        self._ended = False
        self._retried = False
        self.upstream_keep_alive = False

    # --- sending ------------------------------------------------------------------------------

    def start(self) -> None:
        conn = self.fast.pool.take_idle()
        if conn is None:
            self.fast.spawn(self._connect_and_send())
        else:
            self._send(conn)

    def _send(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        if self.caller.writing_paused:
            conn.pause_reading()
        conn.send(self, self.request)

    async def _connect_and_send(self) -> None:
        try:
            conn = await self.fast.pool.connect()
        except TimeoutError:
            self._error(504, "timeout", "the upstream did not answer in time")
        except OSError as exc:
            self._error(502, "unreachable", f"cannot reach the upstream: {exc}")
        else:
            if self._ended:  # the caller went away meanwhile
                conn.close()
            else:
                self._send(conn)

    # --- httptools' callbacks -------------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.conn is not None and self.conn.parser is not None
        self.status = self.conn.parser.get_status_code()
        self.upstream_keep_alive = self.conn.parser.should_keep_alive()
        self._head_at = time.perf_counter()
        drop = set(HOP_BY_HOP)
        content_type, length, chunked = b"", None, False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"connection":
                drop.update(t.strip().decode("latin-1") for t in value.lower().split(b","))
            elif lower == b"content-type":
                content_type = value
            elif lower == b"content-length":
                length = value
            elif lower == b"transfer-encoding":
                chunked = True
        self._sse = content_type.startswith(b"text/event-stream")
        if self.fast.want_usage and self.status < 400:
            strip = self.call is not None and self.call.strip_usage
            self._usage = ResponseUsage(content_type.decode("latin-1"), strip=strip)
        bodiless = self.status in _NO_BODY or self.status < 200
        self._until_close = not (bodiless or chunked or length is not None)
        self._chunked = not bodiless and (
            length is None or (self._usage is not None and self._usage.strip)
        )
        if self._chunked:
            drop.add("content-length")
        lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, self._reason)]
        for name, value in self._headers:
            if name.decode("latin-1").lower() not in drop:
                lines.append(b"%s: %s\r\n" % (name, value))
        if self._chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not self.keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self._head = b"".join(lines)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True

    # --- relaying ---------------------------------------------------------------------------------

    def flushed(self) -> bool:
        """Relay what this read gave in one write; True once the answer is complete."""
        if self._ended:
            return True
        if self._head is None:
            return False
        data = b"".join(self._body) if self._body else b""
        self._body.clear()
        usage = self._usage
        if usage is not None:
            data = usage.feed(data) if data else b""
            if self._complete:
                data += usage.finish()
        parts = []
        added_s = None
        if not self._head_sent:
            if not (data or self._complete or self._sse):
                return False  # the head waits for the first body bytes (one write, one segment)
            parts.append(self._head)
            self._head_sent = True
            added_s = self.added_s + time.perf_counter() - self._head_at
        if data:
            parts += (b"%x\r\n" % len(data), data, b"\r\n") if self._chunked else (data,)
        if self._complete and self._chunked:
            parts.append(_LAST_CHUNK)
        if parts and not self.caller.write(b"".join(parts)):
            self.caller_lost()
            return True
        if added_s is not None:  # after the write: the caller need not wait for it
            self.fast.metrics.added.observe(added_s)
        if self._complete:
            self._end(True)
        return self._complete

    def upstream_closed(self) -> bool:
        if self._until_close and not self._complete and not self._ended:
            self._complete = True  # a body that ends with the connection: it has ended
            self.flushed()
            return True
        return False

    def upstream_failed(self, exc: BaseException, *, retry: bool) -> None:
        self.conn = None
        if self._ended:
            return
        if retry and not self._retried:
            self._retried = True
            self.fast.spawn(self._connect_and_send())
            return
        if not self._head_sent:  # nothing relayed yet: answer it
            if isinstance(exc, TimeoutError):
                self._error(504, "timeout", "the upstream did not answer in time")
            else:
                self._error(502, "broken", f"the upstream failed: {exc!r}")
            return
        self.fast.metrics.upstream_errors.labels("broken").inc()
        log.warning("upstream response to %s cut short: %r", self.target, exc)
        self.caller.abort()  # the caller must not take it for complete
        self._end(False)

    def caller_lost(self) -> None:
        """The caller went away: stop reading the upstream (that connection is not reused)."""
        if self._ended:
            return
        log.debug("caller disconnected during %s", self.target)
        if self.conn is not None:
            self.conn.close()
        self._end(False, tell_caller=False)

    # --- endings ------------------------------------------------------------------------------

    def _error(self, status: int, kind: str, message: str) -> None:
        if self._ended:
            return
        self.fast.metrics.upstream_errors.labels(kind).inc()
        log.warning("%s: %s", self.target, message)
        body = orjson.dumps(upstream_error(status, kind, message))
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\n%s\r\n"
            % (
                status,
                b"Bad Gateway" if status == 502 else b"Gateway Timeout",
                len(body),
                b"" if self.keep_alive else b"Connection: close\r\n",
            )
        )
        self.status = status
        self.caller.write(head + body)
        self._end(True)

    def _end(self, complete: bool, *, tell_caller: bool = True) -> None:
        """Count the request, tell the call's story, free the caller for its next one."""
        if self._ended:
            return
        self._ended = True
        self.conn = None
        self.fast.metrics.requests_by.inc(self.route, str(self.status))
        call = self.call
        if call is not None:
            call.status, call.complete = self.status, complete
            call.usage = self._usage
            self.fast.proxy.close_call(call)
        if tell_caller:
            self.caller.exchange_done(complete and self.keep_alive)
