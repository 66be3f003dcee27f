"""Every private faust / aiokafka attribute the worker touches, behind one small adapter.

faust-streaming 0.15 and aiokafka 0.14 offer no public way to do these six things. Each
function names what it relies on; `tests/unit/stream/test_faust_internals.py` fails loudly
when an upgrade moves or renames one, instead of the worker silently losing a guarantee.
(`worker.stream.consumer` also overrides faust's protected consumer hooks; the same test
checks those.)
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from faust.streams import _current_event

Commit = Callable[[Any], Awaitable[bool]]


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The offset faust last committed for `tp` (None: nothing committed yet).

    faust's `Consumer._committed_offset`: what it read at assignment or committed since."""
    offset = consumer._committed_offset.get(tp)
    return int(offset) if offset is not None else None


def is_changelog(consumer: Any, tp: Any) -> bool:
    """Is `tp` a partition of a table's changelog (not of a stream)?

    faust's `Consumer._is_changelog_tp(tp)`: its topic is one of the tables' changelogs."""
    return bool(consumer._is_changelog_tp(tp))


def wrap_offset_commit(consumer: Any, wrap: Callable[[Commit], Commit]) -> None:
    """Replace faust's `Consumer._commit(offsets)`, the one call that commits offsets to Kafka
    under at_least_once, with `wrap(original)`."""
    consumer._commit = wrap(consumer._commit)


@contextlib.contextmanager
def current_event(event: Any) -> Iterator[None]:
    """Make `event` faust's current event while a table is written outside the agent.

    A table write routes its changelog record by the partition of the current event
    (`faust.streams._current_event`, a ContextVar holding a weak reference)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def write_local(table: Any, partition: int, key: bytes, value: bytes | None) -> None:
    """Write (or, with None, delete) a key in a table's local RocksDB only, no changelog.

    faust's RocksDB `Store._db_for_partition(partition)` is the database of one partition
    (`put`, `delete`); the table's `data` is its store."""
    db = table.data._db_for_partition(partition)
    if value is None:
        db.delete(key)
    else:
        db.put(key, value)


def set_fetch_batching(consumer: Any, min_bytes: int, max_wait_ms: int) -> None:
    """Fetch sizing of an AIOKafkaConsumer that faust built with its own fixed values.

    aiokafka's `AIOKafkaConsumer.__init__` keeps them as `_fetch_min_bytes` and
    `_fetch_max_wait_ms` and reads them when `start()` builds its fetcher."""
    consumer._fetch_min_bytes = min_bytes
    consumer._fetch_max_wait_ms = max_wait_ms
