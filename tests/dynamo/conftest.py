"""Tests against NVIDIA Dynamo 1.6.1's real frontend and mocker engine (marked ``dynamo``).

The first use installs Dynamo into `.cache/dynamo` (PyPI, about 100 s on a clean cache);
fixture ``dynamo`` is one mocker + frontend for the session, with the router queue on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.dynamo.processes import DynamoStack

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.dynamo)


@pytest.fixture(scope="session")
def dynamo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoStack]:
    stack = DynamoStack(tmp_path_factory.mktemp("dynamo"))
    try:
        yield stack.start()
    finally:
        stack.stop()
