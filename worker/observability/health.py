"""The /metrics, /healthz and /readyz endpoints on one port (aiohttp)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from worker.observability.metrics import WorkerMetrics


class HealthServer:
    """aiohttp server for /metrics, /healthz and /readyz."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        ready: Callable[[], tuple[bool, str]],
        healthy: Callable[[], tuple[bool, str]],
        before_scrape: Callable[[], None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.ready = ready
        self.healthy = healthy
        self.before_scrape = before_scrape
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        if self.before_scrape is not None:
            self.before_scrape()
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @staticmethod
    def _status(check: tuple[bool, str]) -> web.Response:
        ok, detail = check
        return web.json_response(
            {"status": "ok" if ok else "unavailable", "detail": detail}, status=200 if ok else 503
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return self._status(self.healthy())

    async def _readyz(self, _request: web.Request) -> web.Response:
        return self._status(self.ready())

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses  # the bound ones: port 0 becomes a real port
        self.port = int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
