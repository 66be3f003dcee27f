"""The gateway process's HTTP server: the proxy, plus /healthz, /readyz and /metrics.

The three local endpoints answer GET on the gateway's own port; every other request is
the proxy's. `/readyz` is 200 once the hints view is loaded (requests are served before
that, without hints); `/healthz` is 200 while the server runs. Observers are started before
the port is bound and stopped after the last request was answered. In front of aiohttp's
server, the fast path (`fast_server`) serves the common proxied request on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from worker.client import HintsClient
from worker.gateway.config import GatewayConfig
from worker.gateway.fast_server import FastPath
from worker.gateway.metrics import GatewayMetrics
from worker.gateway.observer import CallObserver
from worker.gateway.proxy import HintsProxy

log = logging.getLogger("worker.gateway")


class GatewayServer:
    """Starts and stops the hints view, the upstream client and the HTTP server together."""

    def __init__(
        self,
        config: GatewayConfig,
        client: HintsClient,
        observers: Sequence[CallObserver] = (),
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.config = config
        self.client = client
        #: pass `metrics` to put other metrics (an observer's) on the same /metrics
        self.metrics = metrics or GatewayMetrics()
        self.observers = list(observers)
        store = client.view.store
        self.metrics.bind(
            agents=lambda topic: len(store.hints if topic == "hints" else store.tries),
            lag=lambda: client.view.lag,
            ready=lambda: client.ready,
            invalid=lambda topic: store.invalid["hints" if topic == "hints" else "tries"],
            runs=lambda: len(client.calls),
        )
        self.proxy = HintsProxy(config, client, self.metrics, self.observers)
        self._runner: web.AppRunner | None = None
        self._fast: FastPath | None = None
        self._listener: asyncio.Server | None = None
        self._started_observers: list[CallObserver] = []
        #: the port actually bound (config.port 0 picks a free one)
        self.port: int | None = None

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/{tail:.*}", self.proxy.handle)
        return app

    async def start(self) -> None:
        """Start the observers, bind the port (OSError when it cannot), then start following
        the topics."""
        for observer in self.observers:
            await observer.start()
            self._started_observers.append(observer)
        await self.proxy.start()
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            self.port = await self._listen(self._runner)
        except OSError:
            await self.stop()
            raise
        await self.client.start()
        log.info(
            "gateway listening",
            extra={"host": self.config.host, "port": self.port, "upstream": self.config.upstream},
        )

    async def _listen(self, runner: web.AppRunner) -> int:
        """Bind the port: the fast path in front of aiohttp's server when the upstream is
        plain HTTP (`fast_server`), else aiohttp's alone; the port bound."""
        if not FastPath.serves(self.config.upstream):
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
            server = site._server  # aiohttp exposes the bound sockets only here
        else:
            assert runner.server is not None
            self._fast = FastPath(self.proxy, runner.server)
            loop = asyncio.get_running_loop()
            server = self._listener = await loop.create_server(
                self._fast.protocol, self.config.host, self.config.port, reuse_address=True
            )
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self.config.port

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._fast is not None:
            await self._fast.close()
            self._fast = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.proxy.stop()
        await self.client.stop()
        while self._started_observers:
            observer = self._started_observers.pop()
            try:
                await observer.stop()
            except Exception:
                log.exception("call observer %r failed to stop", observer)

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "view": self.client.view.status})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready = self.client.ready
        body = {
            "status": "ok" if ready else "unavailable",
            "detail": self.client.view.status,
            "agents": len(self.client.view.store.hints),
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
