"""The gateway's HTTP hop: send a request on to the upstream and relay its answer back.

Status codes, headers (less hop-by-hop ones) and bodies pass through as the upstream sent
them, the body chunk by chunk as it arrives (SSE included), never buffered. An upstream
that cannot be reached answers 502, one that stays silent past `read_timeout_s` 504, both
as OpenAI-style error bodies; a response cut short by the upstream is cut short for the
caller too (the connection is closed). What to send is the proxy's business (`proxy`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from worker.gateway.config import GatewayConfig
from worker.gateway.headers import response_headers
from worker.gateway.metrics import GatewayMetrics
from worker.gateway.response_usage import ResponseUsage

log = logging.getLogger("worker.gateway")


def upstream_error(status: int, kind: str, message: str) -> dict[str, Any]:
    """The OpenAI-style error body the gateway answers an upstream failure with."""
    return {"error": {"message": message, "type": f"upstream_{kind}", "code": status}}


class _HeadersWithBody(web.StreamResponse):
    """A relayed response whose headers leave with its first body bytes: one write and one
    TCP segment to the caller instead of two (aiohttp's StreamResponse sends the headers at
    `prepare`; its Response holds them like this). Not for event streams, whose headers go
    at once: a client may wait for them before the first event."""

    _send_headers_immediately = False


@dataclass(slots=True)
class Relayed:
    """How a forwarded request went: the response the caller got, its status, whether it
    was complete, and the usage found in it (when asked for)."""

    response: web.StreamResponse
    status: int
    complete: bool
    usage: ResponseUsage | None = None


class UpstreamRelay:
    """Owns the upstream HTTP client; `forward` sends one request on and relays the answer."""

    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.config.connect_timeout_s,
            sock_read=self.config.read_timeout_s,
        )
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
            timeout=timeout,
            auto_decompress=False,  # bytes pass through as the upstream encoded them
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def forward(
        self,
        request: web.Request,
        headers: Any,
        data: Any,
        route: str,
        added_s: float,
        *,
        usage: bool = False,
        strip_usage: bool = False,
    ) -> Relayed:
        """Send `request` on with `headers` and body `data`; relay the answer to its caller.

        `added_s`: the gateway's time on the request so far (for the added-time metric).
        `usage`: find the usage of a successful answer (`strip_usage`: and drop the stream's
        usage chunk the gateway asked for)."""
        assert self.session is not None, "relay not started"
        url = URL(self.config.upstream + request.raw_path, encoded=True)
        try:
            upstream = await self.session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            )
        except TimeoutError:
            return self._failed(
                request, route, 504, "timeout", "the upstream did not answer in time"
            )
        except aiohttp.ClientConnectorError as exc:
            return self._failed(
                request, route, 502, "unreachable", f"cannot reach the upstream: {exc}"
            )
        except aiohttp.ClientError as exc:
            return self._failed(request, route, 502, "broken", f"the upstream failed: {exc!r}")
        relay_start = time.perf_counter()
        found: ResponseUsage | None = None
        async with upstream:
            content_type = upstream.headers.get("Content-Type", "")
            sse = content_type.startswith("text/event-stream")
            response = (web.StreamResponse if sse else _HeadersWithBody)(
                status=upstream.status,
                reason=upstream.reason,
                headers=response_headers(upstream.headers),
            )
            try:
                await response.prepare(request)
            except ConnectionError:
                complete = False
            else:
                self.metrics.added.observe(added_s + time.perf_counter() - relay_start)
                if usage and upstream.status < 400:
                    found = ResponseUsage(content_type, strip=strip_usage)
                complete = await self._relay(request, upstream, response, found)
        self.metrics.requests_by.inc(route, str(upstream.status))
        return Relayed(response, upstream.status, complete, found)

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        usage: ResponseUsage | None,
    ) -> bool:
        """Copy the upstream's body to the caller as it arrives; False when cut short.

        The last bytes leave with the end of the response (a chunked body's terminator) in
        one write, before the handler's bookkeeping: a caller of a chunked upstream (Dynamo's
        frontend answers JSON chunked) otherwise waits for a second write after it."""
        content = upstream.content
        while True:
            try:
                chunk = await content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.metrics.upstream_errors.labels("broken").inc()
                log.warning(
                    "upstream response to %s %s cut short: %r", request.method, request.path, exc
                )
                if request.transport is not None:
                    request.transport.abort()  # the caller must not take it for complete
                return False
            ended = not chunk or content.at_eof()
            if usage is not None:
                chunk = usage.feed(chunk) if chunk else b""
                if ended:
                    chunk += usage.finish()
            try:
                if ended:
                    await response.write_eof(chunk)
                    return True
                if chunk:
                    await response.write(chunk)
            except ConnectionError:  # the caller went away: stop reading the upstream
                log.debug("caller disconnected during %s %s", request.method, request.path)
                return False

    def _failed(
        self, request: web.Request, route: str, status: int, kind: str, message: str
    ) -> Relayed:
        self.metrics.upstream_errors.labels(kind).inc()
        self.metrics.requests_by.inc(route, str(status))
        log.warning("%s %s: %s", request.method, request.path, message)
        response = web.json_response(
            upstream_error(status, kind, message),
            status=status,
            dumps=lambda v: orjson.dumps(v).decode(),
        )
        return Relayed(response, status, True)
