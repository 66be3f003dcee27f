"""`python -m worker gateway`: the OpenAI-compatible hints gateway (docs/router.md).

    python -m worker gateway --upstream http://dynamo:8000 --port 8080 \\
        --bootstrap-servers kafka:9092 --profile dynamo

Settings come from the same places as the worker's (`config/worker.toml` < `WORKER_*`
environment < flags): the `[gateway]` section, plus `bootstrap_servers`, `topics.hints`,
`topics.tries`, `[kafka]` and `learner.scale`. Exit codes: 0 after SIGTERM / SIGINT,
2 bad settings, 3 cannot start (the port cannot be bound).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from worker.client import PROFILES, HintsClient
from worker.gateway.config import GatewayConfig
from worker.gateway.server import GatewayServer
from worker.observability import setup_logging
from worker.settings import Settings, SettingsError, load_settings

log = logging.getLogger("worker.gateway")

EXIT_CONFIG = 2
EXIT_START = 3

#: CLI flag -> dotted setting name (flags not given leave env/TOML values alone)
FLAGS: dict[str, str] = {
    "upstream": "gateway.upstream",
    "host": "gateway.host",
    "port": "gateway.port",
    "profile": "gateway.profile",
    "overwrite": "gateway.overwrite",
    "max_age_s": "gateway.max_age_s",
    "min_runs": "gateway.min_runs",
    "bootstrap_servers": "bootstrap_servers",
    "log_level": "log_level",
    "log_json": "log_json",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML settings file (default config/worker.toml)")
    parser.add_argument(
        "--upstream", help="OpenAI-compatible server to forward to, http(s)://host:port[/path]"
    )
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0 = any)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers, comma separated")
    parser.add_argument("--profile", choices=PROFILES, help="how hints are written (SPEC 8)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace hint fields the caller already set (default: the caller's win)",
    )
    parser.add_argument("--max-age-s", type=float, help="skip hints older than this; 0 = never")
    parser.add_argument("--min-runs", type=int, help="skip hints learned from fewer runs")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any setting by dotted name, e.g. --set gateway.run_idle_s=300",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {name: getattr(args, flag) for flag, name in FLAGS.items()}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SettingsError(f"--set {item!r}: expected NAME=VALUE")
        overrides[name.strip()] = value
    return load_settings(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        config = GatewayConfig.from_settings(settings)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(settings.log_level, settings.log_json)
    return asyncio.run(serve(settings, config))


async def serve(settings: Settings, config: GatewayConfig) -> int:
    """Run until SIGTERM or SIGINT; the exit code."""
    server = GatewayServer(config, HintsClient.from_settings(settings))
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot start: cannot listen on %s:%s: %s", config.host, config.port, exc)
        return EXIT_START
    log.info(
        "gateway running",
        extra={
            "profile": settings.gateway.profile,
            "bootstrap_servers": settings.bootstrap_servers,
            "topics": [settings.topics.hints, settings.topics.tries],
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("gateway stopping")
    await server.stop()
    return 0
