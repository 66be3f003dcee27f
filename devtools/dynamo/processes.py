"""The mocker engine and the frontend (OpenAI server + KV router) as local processes.

No etcd, no NATS: file discovery in a directory of ours, TCP request plane, ZMQ event
plane, every address the processes advertise on 127.0.0.1 (the mocker's ZMQ publishers
bind `0.0.0.0` whatever they are told; they are only ever reached on loopback). `HOME` is
pointed into the work directory: the frontend caches model cards under `~/.cache/dynamo`.

    with DynamoStack(workdir) as dynamo:
        dynamo.start()
        dynamo.url   # http://127.0.0.1:PORT, OpenAI-compatible

The mocker simulates a vLLM-like engine's scheduling and timing on CPU (`--speedup-ratio
1.0`: real time); with 8 sequences it decodes ~170 tokens/s per sequence here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from devtools.dynamo.install import install
from devtools.dynamo.model_dir import MODEL_NAME, ensure_model_dir
from devtools.kafka_broker import free_port
from devtools.worker_process import _die_with_parent

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO_ROOT / ".cache" / "dynamo" / "model"
HOST = "127.0.0.1"


class DynamoError(RuntimeError):
    """A Dynamo process did not start; the message has its log's tail."""


@dataclass
class DynamoStack:
    """One mocker and one frontend; `start`, `stop`, or use as a context manager."""

    workdir: Path
    max_num_seqs: int = 8
    speedup_ratio: float = 1.0
    #: the router queue (Dynamo 1.6.1; priorities only act on requests that queue)
    queue_threshold: float | None = 0.5
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        home = self.workdir / "home"
        kv = self.workdir / "discovery"
        home.mkdir(parents=True, exist_ok=True)
        kv.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DYN_")}
        env.update(
            HOME=str(home),
            HF_HUB_OFFLINE="1",
            DYN_DISCOVERY_BACKEND="file",
            DYN_FILE_KV=str(kv),
            DYN_REQUEST_PLANE="tcp",
            DYN_EVENT_PLANE="zmq",
            DYN_TCP_RPC_HOST=HOST,
            DYN_TCP_RESPONSE_STREAM_HOST=HOST,
            DYN_EVENT_PLANE_HOST=HOST,
            DYN_SYSTEM_HOST=HOST,
            DYN_HTTP_HOST=HOST,
        )
        return env

    def start(self, timeout: float = 120.0) -> DynamoStack:
        python = install()
        model = ensure_model_dir(python, MODEL_DIR)
        env = self.env()
        self._spawn(
            "mocker",
            [
                str(python),
                "-m",
                "dynamo.mocker",
                "--model-path",
                str(model),
                "--model-name",
                MODEL_NAME,
                "--speedup-ratio",
                f"{self.speedup_ratio:g}",
                "--max-num-seqs",
                str(self.max_num_seqs),
            ],
            env,
        )
        queue = (
            ["--router-queue-threshold", f"{self.queue_threshold:g}"]
            if self.queue_threshold is not None
            else []
        )
        self._spawn(
            "frontend",
            [
                str(python),
                "-m",
                "dynamo.frontend",
                "--http-host",
                HOST,
                "--http-port",
                str(self.port),
                "--router-mode",
                "kv",
                *queue,
            ],
            env,
        )
        self._wait_model(timeout)
        return self

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the process keeps it
        self.procs[name] = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def _wait_model(self, timeout: float) -> None:
        """Until the frontend lists the model (the mocker registered and was discovered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise DynamoError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")
            try:
                with urlopen(self.url + "/v1/models", timeout=2) as response:
                    models = json.loads(response.read())
                if any(m.get("id") == MODEL_NAME for m in models.get("data", [])):
                    return
            except (URLError, OSError, ValueError):
                pass
            time.sleep(0.3)
        raise DynamoError(
            f"the model was not served within {timeout:.0f} s:\n"
            f"{self.log_tail('frontend')}\n{self.log_tail('mocker')}"
        )

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> DynamoStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
