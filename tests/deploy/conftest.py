"""Deploy checks (marker `deploy`, `make deploy-check`): alerts, dashboard, chart, Dockerfile.

Fixtures `prometheus_bin` and `helm_bin` install the tools through the project's scripts on
first use (instant afterwards). `kafka_broker` is a real broker like the integration tests'
(module-scoped: only the live Prometheus test needs one, and it is stopped before the
integration tests start theirs).
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: kafka_broker
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # worker_process

from deploy_tools import install
from kafka_broker import KafkaBroker

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.deploy)


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """Directory with `prometheus` and `promtool` (scripts/install-prometheus.sh)."""
    return install("install-prometheus.sh")


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """Directory with `helm` (scripts/install-helm.sh)."""
    return install("install-helm.sh")


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[KafkaBroker]:
    broker = KafkaBroker(die_with_parent=True)
    atexit.register(broker.close)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
