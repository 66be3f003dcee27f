"""`python -m worker gateway` as a process: flags, environment, exit codes, broker down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import openai
import pytest

from devtools.fake_upstream import FakeUpstream
from devtools.worker_process import REPO_ROOT, free_port
from tests.integration.published_hints import Published, published
from worker.learner import LearnerConfig, lookup_hints

pytestmark = pytest.mark.integration


class GatewayProcess:
    """One `python -m worker gateway` subprocess with its log in a file."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="gateway-", suffix=".log")[1])
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        cmd = [sys.executable, "-m", "worker", "gateway", "--host", "127.0.0.1", *args]
        if "--port" not in args and "WORKER_GATEWAY__PORT" not in (env or {}):
            cmd += ["--port", str(self.port)]
        elif env and "WORKER_GATEWAY__PORT" in env:
            self.port = int(env["WORKER_GATEWAY__PORT"])
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=clean | (env or {}), stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> int:
        try:
            with urlopen(self.url + path, timeout=2) as response:
                return response.status
        except URLError as exc:
            return getattr(exc, "code", 0) or 0
        except (ConnectionError, TimeoutError):
            return 0

    def wait_status(self, path: str, status: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gateway exited:\n{self.log.read_text()}"
            if self.get(path) == status:
                return
            time.sleep(0.1)
        raise AssertionError(f"{path} never answered {status}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def gateways() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for gateway in started:
        gateway.close()


@pytest.fixture(scope="module")
def outputs(kafka_broker: Any) -> Published:
    return published(kafka_broker)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream().in_thread() as up:
        yield up


def topic_env(out: Published) -> dict[str, str]:
    return {"WORKER_TOPICS__HINTS": out.topics.hints, "WORKER_TOPICS__TRIES": out.topics.tries}


def ask(gateway: GatewayProcess, name: str = "write", run: str | None = None) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0, timeout=30)
    client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={
            "x-agent-id": "planner",
            "x-agent-run-id": run or str(uuid.uuid4()),
            "x-agent-call-name": name,
        },
    )


def write_hints(out: Published) -> dict[str, Any]:
    hints = lookup_hints(out.expected["planner"]["trie"], ["write"], 1, LearnerConfig())
    assert hints is not None
    return hints


def test_flags_readyz_hints_and_a_clean_stop(
    outputs: Published, upstream: FakeUpstream, gateways: list[GatewayProcess]
) -> None:
    gateway = GatewayProcess(
        ["--upstream", upstream.url, "--bootstrap-servers", outputs.bootstrap, "--profile",
         "nemo-relay"],
        env=topic_env(outputs),
    )  # fmt: skip
    gateways.append(gateway)
    gateway.wait_status("/readyz", 200)
    assert gateway.get("/healthz") == 200
    ask(gateway)
    assert upstream.received[-1].agent_hints() == write_hints(outputs)
    assert gateway.stop() == 0
    log = gateway.log.read_text()
    assert "gateway stopping" in log
    assert "event_loop=uvloop" in log  # "auto", and uvloop is in the base install


def test_configured_by_environment_alone(
    outputs: Published, upstream: FakeUpstream, gateways: list[GatewayProcess]
) -> None:
    port = free_port()
    env = topic_env(outputs) | {
        "WORKER_BOOTSTRAP_SERVERS": outputs.bootstrap,
        "WORKER_GATEWAY__UPSTREAM": upstream.url,
        "WORKER_GATEWAY__PORT": str(port),
        "WORKER_GATEWAY__PROFILE": "nat-headers",
        "WORKER_GATEWAY__OVERWRITE": "true",
        "WORKER_GATEWAY__EVENT_LOOP": "asyncio",
    }
    gateway = GatewayProcess([], env=env)
    gateways.append(gateway)
    gateway.wait_status("/readyz", 200)
    ask(gateway)
    assert upstream.received[-1].hint_headers()["x-prefix-osl"] == str(write_hints(outputs)["osl"])
    assert gateway.stop() == 0
    assert "event_loop=asyncio" in gateway.log.read_text()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ([], {}, "gateway.upstream (env WORKER_GATEWAY__UPSTREAM): required"),
        (["--upstream", "ftp://x"], {}, "expected http(s)://host[:port][/path]"),
        (["--upstream", "http://h:1", "--max-age-s", "-1"], {}, "gateway.max_age_s"),
        (["--upstream", "http://h:1"], {"WORKER_GATEWAY__PROFILE": "triton"}, "gateway.profile"),
        (["--upstream", "http://h:1", "--set", "nonsense"], {}, "expected NAME=VALUE"),
    ],
    ids=["no-upstream", "bad-upstream", "negative-age", "bad-profile", "bad-set"],
)
def test_bad_settings_exit_2_naming_the_setting(
    args: list[str], env: dict[str, str], message: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    done = subprocess.run(
        [sys.executable, "-m", "worker", "gateway", *args],
        cwd=REPO_ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_a_port_in_use_exits_3(outputs: Published, upstream: FakeUpstream) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
        done = subprocess.run(
            [sys.executable, "-m", "worker", "gateway", "--upstream", upstream.url,
             "--host", "127.0.0.1", "--port", str(port), "--bootstrap-servers",
             outputs.bootstrap],
            cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 3
    assert "cannot listen on 127.0.0.1" in done.stderr


def test_broker_down_at_start_passes_requests_then_loads_when_it_returns(
    kafka_broker: Any, outputs: Published, upstream: FakeUpstream, gateways: list[GatewayProcess]
) -> None:
    kafka_broker.stop()
    try:
        gateway = GatewayProcess(
            ["--upstream", upstream.url, "--bootstrap-servers", outputs.bootstrap,
             "--priority-policy", "level"],
            env=topic_env(outputs),
        )  # fmt: skip
        gateways.append(gateway)
        gateway.wait_status("/healthz", 200)
        assert gateway.get("/readyz") == 503
        ask(gateway)  # served, without hints
        assert upstream.received[-1].agent_hints() is None
        assert upstream.received[-1].hint_headers() == {}
    finally:
        kafka_broker.start()
    gateway.wait_status("/readyz", 200, timeout=90)
    ask(gateway)
    want = write_hints(outputs)
    assert upstream.received[-1].agent_hints() == {
        "osl": want["osl"],
        "priority": round(want["latency_sensitivity"]),
    }
    assert "broker unavailable" in gateway.log.read_text()
    assert gateway.stop() == 0
