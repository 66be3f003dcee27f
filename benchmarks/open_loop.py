"""An open-loop HTTP load generator for latency benchmarks: vegeta, driven from Python.

Open loop: requests leave on a fixed schedule (`rate` per second) whether or not earlier ones
were answered, so a server that stalls is charged for every request that waited, not just the
one in flight (a closed-loop client would hide that). vegeta is Go: it costs a fraction of
the CPU per request a Python client does, and its pauses do not land in the figures.
`scripts/install-vegeta.sh` builds it with the machine's Go.
"""

from __future__ import annotations

import base64
import csv
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from benchmarks.scheduling import child_setup
from devtools.worker_process import REPO_ROOT

INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-vegeta.sh"
csv.field_size_limit(1 << 30)


class LoadGeneratorMissing(RuntimeError):
    """vegeta is not installed and cannot be built here (no Go)."""


def vegeta() -> Path:
    """The vegeta binary, built on first use."""
    done = subprocess.run([str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LoadGeneratorMissing(f"cannot install vegeta: {done.stderr.strip()[-500:]}")
    return Path(done.stdout.strip()) / "vegeta"


@dataclass(frozen=True)
class Request:
    url: str
    headers: Mapping[str, str]
    body: bytes
    method: str = "POST"


def write_targets(path: Path, requests: Iterable[Request]) -> Path:
    """vegeta's JSON target format, one request a line (vegeta cycles through them)."""
    with open(path, "wb") as out:
        for request in requests:
            target = {
                "method": request.method,
                "url": request.url,
                "header": {name: [value] for name, value in request.headers.items()},
                "body": base64.b64encode(request.body).decode(),
            }
            out.write(orjson.dumps(target) + b"\n")
    return path


@dataclass(frozen=True)
class Results:
    #: seconds, in the order the requests were sent
    latencies: list[float]
    #: requests that did not get a 2xx (status or error text)
    failures: list[str]


def attack(
    binary: Path,
    targets: Path,
    rate: float,
    seconds: float,
    *,
    cpus: set[int] | None = None,
    realtime: bool = False,
) -> Results:
    """Send the targets at `rate` per second for `seconds`; every request's latency."""
    with tempfile.TemporaryDirectory(prefix="vegeta-") as work:
        out = Path(work) / "results.bin"
        subprocess.run(
            [str(binary), "attack", "-format=json", f"-targets={targets}", f"-rate={rate:g}/s",
             f"-duration={seconds:g}s", "-max-workers=10000", "-timeout=30s",
             f"-output={out}"],
            check=True, stderr=subprocess.PIPE, preexec_fn=child_setup(cpus, realtime),
        )  # fmt: skip
        encoded = subprocess.run(
            [str(binary), "encode", "-to=csv", str(out)], check=True, capture_output=True
        ).stdout
    rows = sorted(csv.reader(encoded.decode().splitlines()), key=lambda row: int(row[0]))
    latencies = [int(row[2]) / 1e9 for row in rows]
    failures = [f"{row[1]} {row[5]}".strip() for row in rows if not row[1].startswith("2")]
    return Results(latencies, failures)
