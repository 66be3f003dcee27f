"""The gateway's added latency end to end: one more hop in front of Dynamo's frontend.

Sequential 1-token chat requests (each waits for the answer before the next), every round
one request per arm in a seeded random order:
- `direct`: straight to the frontend, as the caller sends it (agent headers Dynamo ignores);
- `direct, as forwarded`: straight to the frontend with what the `dynamo` profile adds
  (`nvext.agent_hints` with osl and priority, `x-dynamo-request-priority`): Dynamo's own
  cost of the hints;
- `gateway`: through `python -m worker gateway` (hints resolved and rendered);
- `gateway, baseline`: a gateway of another checkout (`--baseline-repo`): before/after in
  one run;
- `minimal relay` (`min_relay`): the least any Python hop costs on this machine.
Added = an arm's p50 minus direct's, all from the same minutes.

Against the real frontend, not the stand-in upstream: the gateway's time per request grows
when its process sleeps through the ~20 ms the frontend takes while other processes run
(its caches go cold). With the stand-in answering in 0.7 ms the same gateway adds ~0.6 ms;
with the stand-in answering after 22 ms, ~2 ms (docs/router.md).

`python -m benchmarks dynamo --probe-only [--probe-pairs 300] [--baseline-repo DIR]` runs
only this (Kafka, Dynamo, gateways with fallback hints and the `level` policy, so every
request is rendered with an osl and a priority; ~1 minute once Dynamo is installed); the
full benchmark runs it at its end with the learned hints and the default policy.
"""

from __future__ import annotations

import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from devtools.dynamo.model_dir import MODEL_NAME
from devtools.kafka_broker import free_port
from devtools.worker_process import REPO_ROOT, _die_with_parent

DIRECT, AS_FORWARDED, GATEWAY = "direct", "direct, as forwarded", "gateway"
BASELINE, FLOOR = "gateway, baseline", "minimal relay"
#: what the `dynamo` profile writes for a request (the values do not matter to the cost)
FORWARDED_HINTS = {"osl": 120, "priority": 31}


def _body(hints: dict[str, Any] | None) -> bytes:
    body: dict[str, Any] = {
        "model": MODEL_NAME,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "ping"}],
    }
    if hints is not None:
        body["nvext"] = {"agent_hints": hints}
    return orjson.dumps(body)


async def probe(
    direct: str, via: dict[str, str], pairs: int = 300, seed: int = 22
) -> dict[str, list[float]]:
    """Seconds per request for each arm: `direct`, `direct, as forwarded`, then `via`
    (arm name -> base URL), `pairs` rounds."""
    arms = {DIRECT: direct, AS_FORWARDED: direct, **via}
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    plain, forwarded = _body(None), _body(FORWARDED_HINTS)
    order = list(arms)
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(pairs + 1):  # round 0 warms every connection up, uncounted
            rng.shuffle(order)
            for arm in order:
                headers = {
                    "Content-Type": "application/json",
                    "x-agent-id": "chat-assistant",
                    "x-agent-run-id": f"probe-{i}",
                    "x-agent-call-name": "plan-answer",
                    "x-agent-run-end": "true",
                }
                body = plain
                if arm == AS_FORWARDED:
                    headers["x-dynamo-request-priority"] = str(FORWARDED_HINTS["priority"])
                    body = forwarded
                url = arms[arm] + "/v1/chat/completions"
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{arm}: status {response.status}")
                if i:
                    times[arm].append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]]) -> dict[str, Any]:
    """The results' `added_latency`: the gateway's p50 and p90 over direct (ms), and every
    arm's p50 and p50 over direct."""

    def q(values: list[float], n: int) -> float:
        return statistics.quantiles(values, n=100)[n - 1]

    direct = times[DIRECT]
    base50, base90 = statistics.median(direct), q(direct, 90)
    arms = {
        arm: {
            "p50_ms": statistics.median(values) * 1000,
            "added_p50_ms": (statistics.median(values) - base50) * 1000,
        }
        for arm, values in times.items()
    }
    gateway = times[GATEWAY]
    return {
        "p50_ms": (statistics.median(gateway) - base50) * 1000,
        "p90_ms": (q(gateway, 90) - base90) * 1000,
        "requests": len(gateway),
        "arms": arms,
    }


def lines(added: dict[str, Any]) -> list[str]:
    out = [f"end-to-end probe, {added['requests']} sequential 1-token requests per arm:"]
    for arm, figures in added.get("arms", {}).items():
        over = "" if arm == DIRECT else f"  {figures['added_p50_ms']:+.2f} ms"
        out.append(f"  {arm:<22} p50 {figures['p50_ms']:7.2f} ms{over}")
    return out


class MinRelay:
    """`min_relay` as a process in front of `upstream` (http://host:port)."""

    def __init__(self, upstream: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.dynamo.min_relay",
             "--upstream", upstream.removeprefix("http://"), "--port", str(self.port)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"min_relay exited ({self.proc.returncode})")
            time.sleep(0.1)
        raise RuntimeError("min_relay did not listen within 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def baseline_python(repo: Path) -> str:
    """The checkout's own venv python when it has one, else this one (same dependencies)."""
    python = repo / ".venv" / "bin" / "python"
    return str(python) if python.exists() else sys.executable


async def run(
    direct: str, gateways: dict[str, str], pairs: int, *, floor: bool = True
) -> dict[str, Any]:
    """The probe over `gateways` (arm -> URL), with the minimal relay unless not `floor`."""
    relay = MinRelay(direct) if floor else None
    try:
        via = dict(gateways) | ({FLOOR: relay.url} if relay is not None else {})
        return summary(await probe(direct, via, pairs))
    finally:
        if relay is not None:
            relay.stop()


def probe_only_env() -> dict[str, str]:
    """The gateway's settings for `--probe-only`: every request gets an osl and a priority
    without a worker having learned anything."""
    return {
        "WORKER_GATEWAY__FALLBACK_HINTS": orjson.dumps(
            {"osl": 120, "latency_sensitivity": 3.0}
        ).decode(),
    }
