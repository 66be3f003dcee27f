"""The reverse proxy: forward every request to the upstream, adding hints on the way.

Only `POST /v1/chat/completions` and `POST /v1/completions` with an `x-agent-id` header get
hints; everything else (other paths and methods, headers, status codes, error bodies) is
forwarded untouched by the relay (`relay.UpstreamRelay`: the HTTP hop, errors, streaming).
Hints never stand in a request's way: an invalid or non-object JSON body, or one over
`max_body_bytes`, is forwarded exactly as received; a view that is not loaded yet gives no
hints.

The client hears when each counted call is complete (`call_finished`: fan-out groups close
with their last call). Observers (`observer.CallObserver`, e.g. run recording) hear of each
hint-eligible call when it arrives and when it is complete. A request with
`x-agent-run-end: true` ends its run in the call context once it is answered (a later call
with that run id counts from 1 again).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from worker.client import HintsClient
from worker.gateway.config import GatewayConfig
from worker.gateway.headers import upstream_headers
from worker.gateway.metrics import GatewayMetrics
from worker.gateway.observer import NO_RESPONSE, CallObserver, CompletedCall, StartedCall
from worker.gateway.relay import UpstreamRelay
from worker.gateway.response_usage import ResponseUsage, ask_for_stream_usage

log = logging.getLogger("worker.gateway")

#: request path -> route label, for the paths that get hints
HINT_ROUTES = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions"}
AGENT_HEADER = "x-agent-id"
RUN_HEADER = "x-agent-run-id"
CALL_NAME_HEADER = "x-agent-call-name"
RUN_END_HEADER = "x-agent-run-end"
_TRUE = frozenset({"true", "1", "yes"})
_call_ids = itertools.count(1)


class Call:
    """What the proxy knows about one hint-eligible request while it is under way."""

    __slots__ = (
        "agent_id",
        "call_id",
        "complete",
        "counted",
        "name",
        "route",
        "run_end",
        "run_id",
        "started_ns",
        "status",
        "strip_usage",
        "usage",
    )

    def __init__(self, agent_id: str, run_id: str | None, route: str, run_end: bool) -> None:
        self.call_id = next(_call_ids)
        self.agent_id = agent_id
        self.run_id = run_id
        self.route = route
        self.run_end = run_end
        self.name: str | None = None
        self.started_ns = time.time_ns()
        self.usage: ResponseUsage | None = None
        #: the gateway asked for the stream's usage chunk: strip it from the relayed stream
        self.strip_usage = False
        self.status = NO_RESPONSE
        self.complete = False
        #: the client counted it (hints_for): tell it when the call is finished
        self.counted = False


class HintsProxy:
    """The aiohttp handler: each request's hints, and the call's story told to the client
    and the observers; the relay does the HTTP hop (see the module docstring)."""

    def __init__(
        self,
        config: GatewayConfig,
        client: HintsClient,
        metrics: GatewayMetrics,
        observers: Sequence[CallObserver] = (),
    ) -> None:
        self.config = config
        self.client = client
        self.metrics = metrics
        self.observers = list(observers)
        #: an observer wants the usage of streamed responses even when the client did not ask
        self.ask_stream_usage = any(o.wants_stream_usage for o in self.observers)
        self.relay = UpstreamRelay(config, metrics)

    async def start(self) -> None:
        await self.relay.start()

    async def stop(self) -> None:
        await self.relay.stop()

    # --- the handler ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        route = HINT_ROUTES.get(request.path) if request.method == "POST" else None
        agent_id = request.headers.get(AGENT_HEADER) if route is not None else None
        if route is None or not agent_id:  # absent or "": no hints, nothing observed
            data = request.content if request.body_exists else None
            headers = upstream_headers(request.headers, {}, keep_length=True)
            added_s = time.perf_counter() - started
            relayed = await self.relay.forward(request, headers, data, route or "other", added_s)
            return relayed.response
        call = self.open_call(route, agent_id, request.headers)
        try:
            data, added, keep_length = await self._with_hints(request, call)
            headers = upstream_headers(request.headers, added, keep_length=keep_length)
            added_s = time.perf_counter() - started
            relayed = await self.relay.forward(
                request,
                headers,
                data,
                route,
                added_s,
                usage=bool(self.observers),
                strip_usage=call.strip_usage,
            )
            call.status, call.complete, call.usage = relayed.status, relayed.complete, relayed.usage
            return relayed.response
        finally:
            self.close_call(call)

    def open_call(self, route: str, agent_id: str, headers: Mapping[str, str]) -> Call:
        """A hint-eligible call begins (`headers`: the request's; lower-case names found)."""
        call = Call(
            agent_id,
            headers.get(RUN_HEADER) or None,
            route,
            headers.get(RUN_END_HEADER, "").strip().lower() in _TRUE,
        )
        self._started(call)
        return call

    async def _with_hints(
        self, request: web.Request, call: Call
    ) -> tuple[Any, dict[str, str], bool]:
        """(body to send, headers to add, whether Content-Length still holds)."""
        limit = self.config.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            return self._unchanged(request.headers, call, "too_large", request.content)
        raw, complete = await _read_up_to(request.content, limit)
        if not complete:
            return self._unchanged(request.headers, call, "too_large", _chain(raw, request.content))
        return self.with_hints(call, request.headers, raw)

    def with_hints(
        self, call: Call, headers: Mapping[str, str], raw: bytes
    ) -> tuple[Any, dict[str, str], bool]:
        """The whole body `raw` with the call's hints: (body to send, headers to add,
        whether Content-Length still holds)."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._unchanged(headers, call, "invalid_json", raw)
        if not isinstance(body, dict):
            return self._unchanged(headers, call, "not_object", raw)
        model = body["model"] if isinstance(body.get("model"), str) else None
        call.name = headers.get(CALL_NAME_HEADER) or model
        resolution = self.client.hints_for(call.agent_id, call.run_id, call.name, model)
        call.counted = True
        self.metrics.hints_by.inc(resolution.source)
        if resolution.skipped is not None:
            self.metrics.skipped.labels(resolution.skipped).inc()
        rendering = self.client.render(resolution, body, headers)
        if self.ask_stream_usage and ask_for_stream_usage(body):
            call.strip_usage = True
        elif not rendering.body_changed:
            return raw, rendering.headers, True
        return orjson.dumps(body), rendering.headers, False

    def _unchanged(
        self, headers: Mapping[str, str], call: Call, reason: str, data: Any
    ) -> tuple[Any, dict[str, str], bool]:
        """Forward the body as received; the call still counts in its run when named."""
        call.name = headers.get(CALL_NAME_HEADER) or None
        self.client.hints_for(call.agent_id, call.run_id, call.name)
        call.counted = True
        self.metrics.passed_unchanged.labels(reason).inc()
        return data, {}, True

    def _started(self, call: Call) -> None:
        if not self.observers:
            return
        started = StartedCall(
            call_id=call.call_id,
            agent_id=call.agent_id,
            run_id=call.run_id,
            route=call.route,
            started_ns=call.started_ns,
            run_end=call.run_end,
        )
        for observer in self.observers:
            try:
                observer.call_started(started)
            except Exception:  # an observer's bug never breaks the proxy
                log.exception("call observer %r failed", observer)

    def close_call(self, call: Call) -> None:
        """Tell the client and the observers (once per call, however it ended); end the run
        when asked."""
        if call.counted:
            self.client.call_finished(call.agent_id, call.run_id, call.name)
        if call.run_end and call.run_id is not None:
            self.client.calls.end_run(call.agent_id, call.run_id)
        if not self.observers:
            return
        usage = call.usage
        completed = CompletedCall(
            agent_id=call.agent_id,
            run_id=call.run_id,
            name=call.name,
            route=call.route,
            started_ns=call.started_ns,
            ended_ns=time.time_ns(),
            status=call.status,
            usage=usage.usage if usage is not None else None,
            model=usage.model if usage is not None else None,
            complete=call.complete,
            call_id=call.call_id,
            run_end=call.run_end,
        )
        for observer in self.observers:
            try:
                observer.call_completed(completed)
            except Exception:  # an observer's bug never breaks the proxy
                log.exception("call observer %r failed", observer)


async def _read_up_to(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """The body, or its first > `limit` bytes and False when it is longer."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), False


async def _chain(first: bytes, rest: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """What was read already, then the remainder as it arrives."""
    yield first
    async for chunk in rest.iter_any():
        yield chunk
