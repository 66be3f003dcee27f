"""A throw-away local redis-server for the NeMo Relay tests (loopback, no persistence).

The binary comes from `scripts/install-redis.sh` (Debian's package unpacked into
.cache/redis without root, or a redis-server already on PATH)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from devtools.worker_process import REPO_ROOT, free_port

INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-redis.sh"


def install_redis() -> str:
    """The path of a runnable redis-server (installed on first use)."""
    result = subprocess.run(
        [str(INSTALL_SCRIPT)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"{INSTALL_SCRIPT} failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


class RedisServer:
    def __init__(self) -> None:
        self.binary = install_redis()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="redis-"))
        self.log_path = self.directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> RedisServer:
        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory),
             "--logfile", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-2000:] if self.log_path.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
