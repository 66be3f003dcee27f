"""A faust agent that only iterates its stream: the runtime's own cost per record.

Run as a subprocess by `benchmarks.limits`: reads `--count` records of `--topic` with a
fresh consumer group and prints one JSON line: records, seconds from the first record to
the last, CPU seconds over the same stretch, and the pauses longer than 100 ms between
records (the timeline that shows fetch stalls). `--tuned` uses the worker's consumer
(inline delivery, bulk fetches); without it, faust's stock one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from typing import Any

import faust

from worker.stream.consumer import EagerTransport

STALL_S = 0.1


class TunedApp(faust.App):
    fetch_min_bytes = 262_144
    fetch_max_wait_ms = 100

    def _new_transport(self) -> EagerTransport:
        return EagerTransport(self.conf.broker_consumer, self)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--tuned", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app_class = TunedApp if args.tuned else faust.App
    app = app_class(
        args.group,
        broker=f"kafka://{args.bootstrap_servers}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="bare-faust-"),
        autodiscover=False,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    topic = app.topic(args.topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    result: dict[str, Any] = {}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        seen = 0
        stalls: list[float] = []
        first_wall = first_cpu = last = 0.0
        async for _event in stream.events():
            now = time.monotonic()
            if seen == 0:
                first_wall, first_cpu = now, time.process_time()
            elif now - last > STALL_S:
                stalls.append(now - last)
            last = now
            seen += 1
            if seen >= args.count:
                result.update(
                    records=seen,
                    seconds=now - first_wall,
                    cpu_seconds=time.process_time() - first_cpu,
                    stalls=len(stalls),
                    stalled_seconds=sum(stalls),
                )
                print(json.dumps(result), flush=True)
                os.kill(os.getpid(), signal.SIGTERM)  # a clean stop, as an operator would
                return

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.spinner = None
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
