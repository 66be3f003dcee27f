"""What the state layer needs from the table it is stored in (the bottom layer: it imports
nothing of the worker's, so the state modules and their tests share these types without an
import circle).

The worker's table is `worker.stream.state.table.StateTable` (faust's RocksDB table with a
changelog, written changelog first); the tests use a simulated one
(`tests/unit/stream/changelog_sim.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

#: read one key of the table (None: absent)
Get = Callable[[bytes], bytes | None]


class Receipt(Protocol):
    """A record sent to the table: `applied` once the broker acknowledged it and the local
    store holds it."""

    @property
    def applied(self) -> bool: ...


class Table(Protocol):
    """The state table: reads from the local store, writes through the changelog."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes | None) -> Receipt:
        """Send `key` = `value` (None deletes it) to changelog partition `partition`."""
        ...
