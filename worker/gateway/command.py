"""`python -m worker gateway`: the OpenAI-compatible hints gateway (docs/router.md).

    python -m worker gateway --upstream http://dynamo:8000 --port 8080 \\
        --bootstrap-servers kafka:9092 --profile dynamo

Settings come from the same places as every command's (`worker/defaults.toml` or
`--config` < `WORKER_*` environment < flags): the `[gateway]` section, plus
`bootstrap_servers`, `topics.hints`, `topics.tries`, `[kafka]` and `learner.scale`; with
`--record` also `topics.runs` (runs are recorded there, see `recording`).
Exit codes: 0 after SIGTERM / SIGINT, 2 bad settings, 3 cannot start (the port cannot be
bound, the record spool is another gateway's or cannot be made).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from worker.client import PROFILES, HintsClient
from worker.commands import options
from worker.commands.options import add_settings_arguments
from worker.errors import ExitCode, SettingsError
from worker.gateway.config import GatewayConfig
from worker.gateway.metrics import GatewayMetrics
from worker.gateway.observer import CallObserver
from worker.gateway.recording import GatewayRecording
from worker.gateway.server import GatewayServer
from worker.observability.logs import setup_logging
from worker.recorder import RecorderError
from worker.settings import PRIORITY_POLICIES, Settings

log = logging.getLogger("worker.gateway")

#: flag dest -> dotted setting name (flags not given leave env/TOML values alone)
FLAGS: dict[str, str] = {
    "upstream": "gateway.upstream",
    "host": "gateway.host",
    "port": "gateway.port",
    "profile": "gateway.profile",
    "priority_policy": "gateway.priority.policy",
    "overwrite": "gateway.overwrite",
    "max_age_s": "gateway.max_age_s",
    "min_runs": "gateway.min_runs",
    "min_osl_coverage": "gateway.min_osl_coverage",
    "record": "gateway.record",
    "run_idle_s": "gateway.run_idle_s",
    "record_spool_dir": "gateway.record_spool_dir",
    "log_level": "log_level",
    "log_json": "log_json",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser)
    parser.add_argument(
        "--upstream", help="OpenAI-compatible server to forward to, http(s)://host:port[/path]"
    )
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0 = any)")
    parser.add_argument("--profile", choices=PROFILES, help="how hints are written (SPEC 8)")
    parser.add_argument(
        "--priority-policy",
        choices=PRIORITY_POLICIES,
        help="the dynamo profile's priority per request (default age-remaining)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace hint fields the caller already set (default: the caller's win)",
    )
    parser.add_argument("--max-age-s", type=float, help="skip hints older than this; 0 = never")
    parser.add_argument("--min-runs", type=int, help="skip hints learned from fewer runs")
    parser.add_argument(
        "--min-osl-coverage",
        type=float,
        help="skip an agent's hints while their recent osl coverage is below this (0..1)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        default=None,
        help="record each agent run seen (x-agent-id + x-agent-run-id) to topics.runs",
    )
    parser.add_argument(
        "--run-idle-s",
        type=float,
        help="a run is over after this many seconds without a call (default 600)",
    )
    parser.add_argument("--record-spool-dir", help="where unsent recorded runs wait")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return options.settings_from_args(args, FLAGS)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    config = GatewayConfig.from_settings(settings)
    setup_logging(settings.log_level, settings.log_json, settings.kafka.secrets())
    return event_loop_runner(settings.gateway.event_loop)(serve(settings, config))


def event_loop_runner(choice: str) -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop's runner ("auto" when it is installed, or "uvloop"), else asyncio's.

    The proxy's time goes mostly to sockets and task switches, which uvloop does in C."""
    if choice == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SettingsError("setting gateway.event_loop: uvloop is not installed") from None
        return asyncio.run
    runner: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
    return runner


async def _quiet_gc_once_loaded(client: HintsClient) -> None:
    """Keep the cyclic GC off the long-lived heap (the loaded view, imported modules).

    As in the worker: objects alive once the view is loaded are frozen (JSON trees have no
    cycles; refcounting still frees them) and collections run less often, so a full
    collection does not pause requests for tens of milliseconds (a p99 spike)."""
    gc.set_threshold(10_000, 50, 100)
    await client.wait_ready()
    gc.freeze()


async def serve(settings: Settings, config: GatewayConfig) -> int:
    """Run until SIGTERM or SIGINT; the exit code."""
    client = HintsClient.from_settings(settings)
    metrics = GatewayMetrics()
    observers: list[CallObserver] = []
    if settings.gateway.record:
        try:
            observers.append(
                GatewayRecording.from_settings(
                    settings, registry=metrics.registry, call_counter=client.calls
                )
            )
        except (RecorderError, OSError) as exc:
            log.error("cannot start: cannot record runs: %s", exc)
            return ExitCode.START
    server = GatewayServer(config, client, observers, metrics=metrics)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot start: cannot listen on %s:%s: %s", config.host, config.port, exc)
        return ExitCode.START
    gc_task = asyncio.create_task(_quiet_gc_once_loaded(client))
    log.info(
        "gateway running",
        extra={
            "profile": settings.gateway.profile,
            "priority_policy": settings.gateway.priority.policy,
            "bootstrap_servers": settings.bootstrap_servers,
            "topics": [settings.topics.hints, settings.topics.tries],
            "record": str(settings.gateway.record_spool_dir) if settings.gateway.record else None,
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("gateway stopping")
    gc_task.cancel()
    await server.stop()
    return ExitCode.OK
