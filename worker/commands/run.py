"""`python -m worker run`: the long-running streaming worker (settings, start, clean stop)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from worker.commands import options
from worker.commands.options import add_settings_arguments
from worker.errors import ExitCode, MissingExtraError, SettingsError, StartError
from worker.kafka.clients import explain
from worker.kafka.topics import prepare_topics
from worker.learner.build import compiled
from worker.learner.config import SEMANTICS
from worker.learner.limits import check_publishable
from worker.observability.logs import setup_logging
from worker.settings import Settings

log = logging.getLogger("worker.run")

#: flag dest -> dotted setting name (flags not given leave env/TOML values alone)
FLAGS: dict[str, str] = {
    "group_id": "group_id",
    "group_instance_id": "group_instance_id",
    "state_dir": "state_dir",
    "metrics_port": "metrics_port",
    "metrics_host": "metrics_host",
    "log_level": "log_level",
    "log_json": "log_json",
    "processing_guarantee": "processing_guarantee",
    "publish_interval_ms": "publish_interval_ms",
    "semantics": "learner.semantics",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser)
    parser.add_argument("--group-id", help="consumer group (also the faust app id)")
    parser.add_argument(
        "--group-instance-id", help="static membership: this worker's stable name (pod name)"
    )
    parser.add_argument("--state-dir", help="directory of the RocksDB state store")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics /healthz /readyz")
    parser.add_argument("--metrics-host", help="address to bind the metrics server to")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-json", action="store_true", default=None, help="JSON log lines")
    parser.add_argument("--processing-guarantee", choices=["at_least_once", "exactly_once"])
    parser.add_argument("--publish-interval-ms", type=int, help="hints publish interval")
    parser.add_argument("--semantics", choices=SEMANTICS, help="learner rules")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return options.settings_from_args(args, FLAGS)


def _stream_classes() -> tuple[Any, Any]:
    """The streaming worker's faust-based classes, or MissingExtraError naming the fix: a
    base install (router client, gateway, recorder) has no faust or RocksDB."""
    try:
        from worker.stream.faust_app import FaustWorker
        from worker.stream.service import StreamService
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in {"faust", "mode", "rocksdict"}:
            raise
        raise MissingExtraError(
            f"the streaming worker needs the 'stream' extra ({exc.name} is not installed): "
            "pip install 'agent-hints-worker[stream]'"
        ) from None
    return FaustWorker, StreamService


def prepare_state_dir(path: Path) -> None:
    """Create the state directory (and its parents); StartError when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise StartError(f"state_dir {path} cannot be used: {exc.strerror or exc}") from None


def _tune_gc() -> None:
    """Keep the cyclic GC off the long-lived heap (faust, pydantic, agent states).

    With CPython's defaults the worker ran a full collection every few seconds under load,
    each a 100-300 ms pause of the event loop (a p99 latency spike); GC took 1-8% of the
    CPU. Freezing what exists after start-up and collecting less often cut that to
    ~0.5%, with full collections 30-70 ms. Nearly everything per run is freed by refcount.
    """
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def run(args: argparse.Namespace) -> int:
    FaustWorker, StreamService = _stream_classes()
    settings = settings_from_args(args)
    setup_logging(settings.log_level, settings.log_json, settings.kafka.secrets())
    learner = "compiled" if compiled() else "interpreted"
    log.info("starting worker", extra={"settings": settings.redacted(), "learner": learner})

    try:
        prepare_state_dir(settings.state_dir)
    except StartError as exc:
        log.error("cannot start: %s", exc)
        return exc.exit_code
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        layout = loop.run_until_complete(prepare_topics(settings))
    except (StartError, KafkaError, TimeoutError, OSError) as exc:
        log.error("cannot start: %s", explain(exc, settings.bootstrap_servers, settings.kafka))
        loop.close()
        return ExitCode.START
    tries = settings.topics.tries
    try:  # a trie the limits allow must be publishable, or its agent could never publish
        adaptive = settings.learner.adaptive_on
        models = adaptive is not None and adaptive.priors
        check_publishable(settings.limits, tries, layout.record_limit(tries), models)
    except SettingsError as exc:
        log.error("cannot start: %s", exc)
        loop.close()
        return exc.exit_code

    async def build() -> Any:  # inside the running loop, which the Kafka producer needs
        return StreamService(settings, layout)

    service = loop.run_until_complete(build())
    _tune_gc()
    worker = FaustWorker(
        service,
        loop=loop,
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
        loglevel=settings.log_level,
    )
    log.info(
        "worker running",
        extra={
            "group_id": settings.group_id,
            "partitions": layout.partitions,
            "processing_guarantee": settings.processing_guarantee,
        },
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        log.info("worker stopped", extra={"exit_code": code})
        return code
    except Exception:
        log.exception("worker crashed")
        return ExitCode.FAILED
    return ExitCode.OK
