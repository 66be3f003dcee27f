"""The project's side of the benchmark: fresh topics, a worker that learns, and gateways.

The worker runs with the product's defaults plus the learning settings the benchmark is
given (`--semantics`, `--worker-set NAME=VALUE`), so any rule set can be judged by it. Each
gateway is `python -m worker gateway` against the Dynamo frontend, following the worker's
output topics, with the policy (and any `--gateway-set`) of its arm.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from devtools.kafka_broker import free_port
from devtools.worker_process import (
    PYTHON,
    REPO_ROOT,
    TopicNames,
    _die_with_parent,
    parse_metrics,
)

HOST = "127.0.0.1"


@dataclass
class Gateway:
    """One `python -m worker gateway` process."""

    upstream: str
    bootstrap: str
    topics: TopicNames
    workdir: Path
    policy: str = "age-remaining"
    record: bool = False
    #: extra `--set NAME=VALUE` settings
    settings: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: another checkout's gateway (its directory and python), for before/after runs
    cwd: Path = REPO_ROOT
    python: str = PYTHON
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 60.0) -> Gateway:
        cmd = [
            self.python,
            "-m",
            "worker",
            "gateway",
            "--upstream",
            self.upstream,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--bootstrap-servers",
            self.bootstrap,
            "--priority-policy",
            self.policy,
            "--log-level",
            "WARNING",
        ]
        for name, topic in self.topics.settings().items():
            cmd += ["--set", f"topics.{name}={topic}"]
        if self.record:
            spool = self.workdir / f"spool-{self.port}"
            cmd += ["--record", "--record-spool-dir", str(spool), "--run-idle-s", "60"]
        for item in self.settings:
            cmd += ["--set", item]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        env.update(self.env)
        self.log = self.workdir / f"gateway-{self.policy}-{self.port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._wait("/readyz", timeout)
        return self

    def _wait(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gateway {path} not 200 within {timeout:.0f} s")

    def metrics_text(self) -> str:
        with urlopen(self.url + "/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return text

    def added_buckets(self) -> dict[float, float]:
        """The gateway's own added time per request (`agent_hints_gateway_added_seconds`):
        cumulative counts by upper bound."""
        samples = parse_metrics(self.metrics_text())
        prefix = 'agent_hints_gateway_added_seconds_bucket{le="'
        return {
            float(name[len(prefix) : -2]): value
            for name, value in samples.items()
            if name.startswith(prefix)
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def classes_env(classes: dict[str, int]) -> dict[str, str]:
    """The environment that configures service classes (a mapping is awkward as a flag)."""
    return {"WORKER_GATEWAY__PRIORITY__CLASSES": json.dumps(classes)} if classes else {}
