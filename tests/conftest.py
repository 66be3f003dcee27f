"""Fixtures shared by the tests that need real services: one Kafka broker per session.

Fixture ``kafka_broker`` (session-wide): a started ``devtools/kafka_broker.py:KafkaBroker`` with a
PLAINTEXT listener (``.bootstrap``), a SASL_PLAINTEXT/SCRAM listener (``.sasl_bootstrap``) and
an SSL listener (``.ssl_bootstrap``) whose certificate is signed by the throw-away CA of the
``kafka_tls`` fixture (made with openssl for this session).
The first use installs the jars (``.cache/kafka/<version>``) and starts the broker; it is
stopped at session end, also when tests fail or the run is interrupted. A failing test's
report gets the broker log tail.
"""

from __future__ import annotations

import atexit
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools import tls
from devtools.kafka_broker import KafkaBroker
from devtools.worker_process import WorkerProcess
from worker.learner import build

_started: list[KafkaBroker] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test compiled modules older than their sources (setup.py)."""
    stale = build.stale_modules()
    if stale:
        pytest.exit(
            f"{', '.join(stale)} changed after it was compiled (mypyc); `make install` rebuilds it",
            returncode=2,
        )


@dataclass(frozen=True)
class Tls:
    """The session broker's CA (what clients trust) and an unrelated CA (a wrong trust)."""

    ca: Path
    other_ca: Path
    keystore: Path


@pytest.fixture(scope="session")
def kafka_tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    directory = tmp_path_factory.mktemp("tls")
    ca = tls.make_authority(directory / "ca")
    keystore = tls.make_broker_keystore(directory / "broker", ca)
    other = tls.make_authority(directory / "other", "other-ca")
    return Tls(ca.cert, other.cert, keystore)


@pytest.fixture(scope="session")
def kafka_broker(kafka_tls: Tls) -> Iterator[KafkaBroker]:
    """A running single-node broker shared by the whole session (SCRAM and SSL listeners)."""
    broker = KafkaBroker(
        sasl=True,
        ssl_keystore=kafka_tls.keystore,
        ssl_password=tls.KEYSTORE_PASSWORD,
        die_with_parent=True,
    )
    _started.append(broker)
    atexit.register(broker.close)  # if the session is torn down abnormally
    _stop_on_sigterm()
    try:
        broker.start()
        print(
            f"\nkafka: {broker.version} on {broker.bootstrap}, started in {broker.started_in:.1f}s"
        )
        yield broker
    finally:
        broker.close()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts; killed and their state deleted afterwards."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.close()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A unique topic name per test (not created: pass it to ``kafka_broker.create_topic``)."""
    return f"t-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


def _stop_on_sigterm() -> None:
    """Turn SIGTERM (a CI timeout) into KeyboardInterrupt, so fixtures and atexit still run."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def _raise(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _raise)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed and _started and "kafka_broker" in getattr(item, "fixturenames", ()):
        broker = _started[-1]
        report.sections.append(
            (f"kafka broker log (last 80 lines of {broker.log_path})", broker.log_tail(80))
        )
    return report
