"""A stand-in OpenAI-compatible upstream for the hints gateway's tests, demo and benchmark.

It answers `/v1/chat/completions` and `/v1/completions` (plain and streamed as SSE, with a
final usage chunk when `stream_options.include_usage` is set) with a reply whose text is
the JSON of the hints it received: `{"agent_hints": <nvext.agent_hints or null>,
"hint_headers": {<x-dynamo-* / x-prefix-* / x-nemo-relay-* headers>}}`. Every request is
kept in `received` (method, path, query, headers, body bytes). Test helpers:

- `GET|POST|... /echo...` returns what it got (method, path, query, headers, body);
- `/status/{code}` answers that status with an OpenAI-style error body and `x-fake: yes`;
- `/slow/{ms}` answers after that many milliseconds;
- header `x-fake-status: CODE` on a completion request answers that error status;
- header `x-fake-cut: 1` on a streamed chat request sends one chunk, then drops the
  connection;
- `gate`: when set to an `asyncio.Event`, a streamed reply waits for it after its first
  content chunk (proves the gateway relays chunk by chunk);
- `sent`: the body bytes of every completion answer, as sent (streams whole);
- `answered`: what each completion request was answered (`Answer`: status, usage, model,
  when it arrived and when the answer was complete), for checking recorded runs;
- usage: `completion_tokens` is the request's `max_tokens` when set (else 3), `prompt_tokens`
  7, so each call can report different counts;
- header `x-fake-delay-ms: N` on a completion request answers after N milliseconds.

Run alone: `python -m devtools.fake_upstream --port 8000 [--no-keep]` (prints
FAKE_UPSTREAM_URL=...).
In tests: `await FakeUpstream().start()` on the test's loop, or `with FakeUpstream().
in_thread() as up:` for synchronous code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

HINT_HEADER_PREFIXES = ("x-dynamo-", "x-prefix-", "x-nemo-relay-")
ANSWER_WORDS = ("hints", " received", " upstream")


@dataclass
class Received:
    method: str
    path: str
    query: str
    #: path and query as they came on the wire (percent-encoded)
    raw_path: str
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def agent_hints(self) -> Any:
        """The body's `nvext.agent_hints` (None when absent)."""
        return ((self.json() or {}).get("nvext") or {}).get("agent_hints")

    def hint_headers(self) -> dict[str, str]:
        return hint_headers(self.headers)


@dataclass
class Answer:
    """What one completion request was answered."""

    path: str
    status: int
    #: time.time_ns() when the request arrived and when the answer was complete
    received_ns: int
    finished_ns: int
    #: the usage reported (in the body, or a stream's usage chunk), None when not reported
    usage: dict[str, int] | None
    model: str | None
    stream: bool


def hint_headers(headers: Any) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in headers.items()
        if name.lower().startswith(HINT_HEADER_PREFIXES)
    }


class FakeUpstream:
    """The stand-in server; `url` once started."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, keep: bool = True) -> None:
        self.host = host
        self.port = port
        #: keep `received`, `sent` and `answered` (off for benchmarks: an ever-growing heap
        #: makes the garbage collector pause the stand-in for tens of milliseconds)
        self.keep = keep
        self.received: list[Received] = []
        self.sent: list[bytes] = []
        self.answered: list[Answer] = []
        self.gate: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_route("*", "/slow/{ms}", self._slow)
        app.router.add_route("*", "/echo{tail:.*}", self._echo)
        return app

    async def start(self) -> FakeUpstream:
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[FakeUpstream]:
        """Serve from a thread of its own (for synchronous callers)."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    def open_gate(self) -> None:
        """Let a stream waiting on `gate` go on (from any thread)."""
        if self.gate is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.gate.set)

    def _keep(self, log: list[Any], item: Any) -> None:
        if self.keep:
            log.append(item)

    # --- handlers ---------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Received:
        body = await request.read()
        got = Received(
            request.method,
            request.path,
            request.query_string,
            request.raw_path,
            CIMultiDict(request.headers),
            body,
        )
        self._keep(self.received, got)
        return got

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        error = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
        return web.json_response(error, status=status, headers={"x-fake": "yes"})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "text")

    async def _answer(self, request: web.Request, kind: str) -> web.StreamResponse:
        received_ns = time.time_ns()
        got = await self._record(request)
        delay_ms = request.headers.get("x-fake-delay-ms")
        if delay_ms:
            await asyncio.sleep(int(delay_ms) / 1000)
        if request.headers.get("x-fake-status"):
            code = int(request.headers["x-fake-status"])
            return self._answered_error(got, received_ns, code, f"fake error {code}")
        try:
            body = got.json()
        except orjson.JSONDecodeError:
            return self._answered_error(
                got, received_ns, 400, "We could not parse the JSON body of your request."
            )
        if not isinstance(body, dict):
            return self._answered_error(
                got, received_ns, 400, "The request body must be a JSON object."
            )
        nvext = body.get("nvext")
        if not isinstance(nvext, dict):
            nvext = {}
        report = orjson.dumps(
            {"agent_hints": nvext.get("agent_hints"), "hint_headers": got.hint_headers()}
        ).decode()
        model = str(body.get("model", "fake-model"))
        max_tokens = body.get("max_tokens")
        completion = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 3
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": completion,
            "total_tokens": 7 + completion,
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            response = await self._stream(request, body, kind, model, report, usage)
            if not request.headers.get("x-fake-cut"):
                self._keep(
                    self.answered,
                    Answer(got.path, 200, received_ns, time.time_ns(),
                           usage if include_usage else None, model, True)
                )  # fmt: skip
            return response
        if kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": report},
                "finish_reason": "stop",
            }
        else:
            choice = {"index": 0, "text": report, "finish_reason": "stop", "logprobs": None}
        answer = {
            "id": "fake-1",
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
        data = orjson.dumps(answer)
        self._keep(self.sent, data)
        response = web.Response(body=data, content_type="application/json")
        self._keep(
            self.answered, Answer(got.path, 200, received_ns, time.time_ns(), usage, model, False)
        )
        return response

    def _answered_error(
        self, got: Received, received_ns: int, status: int, message: str
    ) -> web.Response:
        self._keep(
            self.answered, Answer(got.path, status, received_ns, time.time_ns(), None, None, False)
        )
        return self._error(status, message)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        kind: str,
        model: str,
        report: str,
        usage: dict[str, int],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        created = int(time.time())
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            data = {"id": "fake-1", "object": obj, "created": created, "model": model}
            return b"data: " + orjson.dumps(data | {"choices": choices} | extra) + b"\n\n"

        def piece(text: str, finish: str | None = None) -> dict[str, Any]:
            if kind == "chat":
                return {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

        sent = bytearray()

        async def send(data: bytes) -> None:
            sent.extend(data)
            await response.write(data)

        await send(event([piece(report)]))
        if request.headers.get("x-fake-cut"):
            assert request.transport is not None
            request.transport.abort()
            return response
        if self.gate is not None:
            await self.gate.wait()
        for word in ANSWER_WORDS:
            await send(event([piece(word)]))
        await send(event([piece("", "stop")]))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send(event([], usage=usage))
        await send(b"data: [DONE]\n\n")
        self._keep(self.sent, bytes(sent))
        await response.write_eof()
        return response

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(
            {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "x"}]}
        )

    async def _status(self, request: web.Request) -> web.Response:
        await self._record(request)
        code = int(request.match_info["code"])
        return self._error(code, f"fake error {code}")

    async def _slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return web.json_response({"slow": True})

    async def _echo(self, request: web.Request) -> web.Response:
        got = await self._record(request)
        return web.json_response(
            {
                "method": got.method,
                "path": got.path,
                "query": got.query,
                "raw_path": got.raw_path,
                "headers": [[k, v] for k, v in got.headers.items()],
                "body": got.body.decode("utf-8", "replace"),
            },
            headers={"x-fake": "yes"},
        )


async def _serve(host: str, port: int, keep: bool) -> None:
    upstream = await FakeUpstream(host, port, keep=keep).start()
    print(f"FAKE_UPSTREAM_URL={upstream.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await upstream.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument(
        "--no-keep", action="store_true", help="keep nothing it received or sent (benchmarks)"
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, not args.no_keep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
