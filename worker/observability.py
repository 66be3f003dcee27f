"""Prometheus metrics, the /metrics /healthz /readyz endpoints (one port), and logging setup."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

REJECT_REASONS = ("invalid_json", "schema", "too_large", "limits")


class WorkerMetrics:
    """Every metric the worker exports, on its own registry (no process-global state)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total
        self.consumed = Counter(
            "agent_hints_runs_consumed", "Records read from the runs and rekey topics", registry=r
        )
        self.learned = Counter(
            "agent_hints_runs_learned", "Runs folded into agent state", registry=r
        )
        self.duplicates = Counter(
            "agent_hints_runs_duplicate", "Runs skipped because their id was learned", registry=r
        )
        self.rejected = Counter(
            "agent_hints_runs_rejected", "Records sent to the DLQ", ["reason"], registry=r
        )
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.rekeyed = Counter(
            "agent_hints_runs_rekeyed",
            "Runs re-sent to the rekey topic because their partition did not match the agent",
            registry=r,
        )
        self.processing = Histogram(
            "agent_hints_record_processing_seconds",
            "Time to process one record (decode, check, learn)",
            buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        lag_buckets = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30, 60)
        self.end_to_publish = Histogram(
            "agent_hints_run_end_to_publish_seconds",
            "From a run's ended_at to its agent's hints being published",
            buckets=lag_buckets,
            registry=r,
        )
        self.consume_to_publish = Histogram(
            "agent_hints_consume_to_publish_seconds",
            "From a run being consumed to its agent's hints being published",
            buckets=lag_buckets,
            registry=r,
        )
        self.published = Counter(
            "agent_hints_published",
            "Records published: output=hints (HintsRecord) or tries (TrieEnvelope)",
            ["output"],
            registry=r,
        )
        self.hints_published = self.published.labels("hints")
        self.tries_published = self.published.labels("tries")
        self.publish_skipped = Counter(
            "agent_hints_publish_unchanged",
            "Publishes skipped because the value equals the last one published",
            ["output"],
            registry=r,
        )
        self.agents = Gauge(
            "agent_hints_agents_cached", "Agents whose state this worker holds", registry=r
        )
        self.state_bytes = Gauge(
            "agent_hints_state_bytes", "Bytes of agent state last written to the table", registry=r
        )
        self.state_writes = Counter(
            "agent_hints_state_writes", "Agent state values written to the table", registry=r
        )
        self.consumer_lag = Gauge(
            "agent_hints_consumer_lag_records",
            "Records not yet processed (high watermark - next offset)",
            ["topic", "partition"],
            registry=r,
        )
        self.ready = Gauge(
            "agent_hints_ready", "1 when assigned partitions are recovered", registry=r
        )
        self.errors = Counter(
            "agent_hints_errors",
            "Unexpected errors handled without stopping",
            ["where"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# --- logging ---------------------------------------------------------------------------------

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class KeyValueFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STD_ATTRS and not k.startswith("_")
        ]
        return f"{base} {' '.join(extras)}" if extras else base


def setup_logging(level: str, json_lines: bool) -> None:
    """Structured logs on stderr; faust/aiokafka chatter is kept at WARNING unless DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("faust", "mode", "aiokafka", "aiohttp"):
        logging.getLogger(name).setLevel(quiet)
