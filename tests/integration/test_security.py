"""Every command reaches a secured cluster the way the worker does: SCRAM and SSL listeners
of the session broker, and a broker certificate from an untrusted CA refused clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from aiokafka.helpers import create_ssl_context

from devtools.worker_process import (
    REPO_ROOT,
    TopicNames,
    WorkerProcess,
    assert_outputs_match,
    expected_outputs,
    outputs_complete,
    produce,
    run_sync,
)
from worker.demo_workload import generate_runs


def scram_env(broker: Any) -> dict[str, str]:
    return {
        "WORKER_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "WORKER_KAFKA__SASL_MECHANISM": broker.scram_mechanism,
        "WORKER_KAFKA__SASL_USERNAME": broker.scram_user,
        "WORKER_KAFKA__SASL_PASSWORD": broker.scram_password,
    }


def ssl_env(cafile: Path) -> dict[str, str]:
    return {"WORKER_KAFKA__SECURITY_PROTOCOL": "SSL", "WORKER_KAFKA__SSL_CAFILE": str(cafile)}


def cli(bootstrap: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m worker ARGS` with only these WORKER_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args, "--bootstrap-servers", bootstrap],
        cwd=REPO_ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def topic_flags(topics: TopicNames) -> list[str]:
    return ["--topic", topics.runs, "--hints-topic", topics.hints, "--tries-topic", topics.tries]


def test_produce_demo_and_inspect_over_scram(kafka_broker: Any, workers: list[Any]) -> None:
    env = scram_env(kafka_broker)
    topics = TopicNames.unique("cmd-scram")
    worker = WorkerProcess(kafka_broker.sasl_bootstrap, topics, env=env)
    workers.append(worker)
    worker.start().wait_ready()
    produced = cli(
        kafka_broker.sasl_bootstrap, env, "produce-demo", *topic_flags(topics),
        "--count", "20", "--agents", "2", "--rate", "0", "--seed", "3", "--follow",
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    assert "final hints per agent" in produced.stdout
    shown = cli(
        kafka_broker.sasl_bootstrap, env, "inspect", "agent-0000",
        "--hints-topic", topics.hints, "--tries-topic", topics.tries,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "hints: osl=" in shown.stdout
    assert kafka_broker.scram_password not in produced.stdout + produced.stderr


def test_worker_and_inspect_over_ssl(kafka_broker: Any, kafka_tls: Any, workers: list[Any]) -> None:
    env = ssl_env(kafka_tls.ca)
    client = {"security_protocol": "SSL", "ssl_context": create_ssl_context(cafile=kafka_tls.ca)}
    runs = list(generate_runs(120, 3, seed=43, llm_calls=(2, 4)))
    expected = expected_outputs(runs)
    topics = TopicNames.unique("ssl")
    worker = WorkerProcess(kafka_broker.ssl_bootstrap, topics, env=env)
    workers.append(worker)
    worker.start().wait_ready()
    records = [(r["agent_id"].encode(), orjson.dumps(r)) for r in runs]
    run_sync(produce(kafka_broker.ssl_bootstrap, topics.runs, records, **client))
    worker.wait_for(
        lambda: outputs_complete(kafka_broker.ssl_bootstrap, topics, expected, **client),
        "hints over the SSL listener",
        timeout=90,
    )
    assert_outputs_match(kafka_broker.ssl_bootstrap, topics, expected, **client)
    agent = sorted(expected)[0]
    shown = cli(
        kafka_broker.ssl_bootstrap, env, "inspect", agent,
        "--hints-topic", topics.hints, "--tries-topic", topics.tries,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"agent {agent}" in shown.stdout
    assert worker.stop() == 0


def test_an_untrusted_broker_certificate_is_refused_clearly(
    kafka_broker: Any, kafka_tls: Any
) -> None:
    env = ssl_env(kafka_tls.other_ca)
    topics = TopicNames.unique("badca")
    worker = WorkerProcess(kafka_broker.ssl_bootstrap, topics, env=env)
    assert worker.run_to_exit(90) == 3
    log = worker.log_text()
    assert "certificate verify failed" in log
    assert f"not signed by a CA in kafka.ssl_cafile ({kafka_tls.other_ca})" in log
    shown = cli(kafka_broker.ssl_bootstrap, env, "inspect", "x", "--timeout", "20")
    assert shown.returncode == 1
    assert "not signed by a CA in kafka.ssl_cafile" in shown.stderr


def test_the_sasl_plain_password_is_never_logged_even_at_debug(
    kafka_broker: Any, workers: list[Any]
) -> None:
    env = scram_env(kafka_broker) | {"WORKER_KAFKA__SASL_MECHANISM": "PLAIN"}
    worker = WorkerProcess(
        kafka_broker.sasl_bootstrap,
        TopicNames.unique("plain"),
        env=env,
        args=["--log-level", "DEBUG"],
    )
    workers.append(worker)
    worker.start().wait_ready()
    assert worker.stop() == 0
    log = worker.log_text()
    assert "SaslAuthenticateRequest" in log  # aiokafka's DEBUG line with the handshake ...
    assert "sasl_auth_bytes=b'**********'" in log  # ... masked
    assert kafka_broker.scram_password not in log
