"""Deploy checks (marker `deploy`, `make deploy-check`): alerts, dashboard, chart, Dockerfile.

Fixtures `prometheus_bin` and `helm_bin` install the tools through the project's scripts on
first use (instant afterwards); the live test uses the session's `kafka_broker`
(tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.deploy_tools import install

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
