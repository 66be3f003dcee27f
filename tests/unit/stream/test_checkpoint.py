"""The checkpoint commits what faust asks for only as far as tries are out, and catches up
once a tries cycle covers the rest, also without further records (no broker)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.unit.stream.state.changelog_sim import Changelog, LocalStore, SimTable
from worker.observability.metrics import WorkerMetrics
from worker.stream.checkpoint import Checkpoint
from worker.stream.state.store import StateStore


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


RUNS0, RUNS1 = TP("runs", 0), TP("runs", 1)


class Publisher:
    def __init__(self) -> None:
        self.covered: dict[tuple[str, int], int] = {}
        self.tries_cycles = 0
        self.positions: dict[tuple[str, int], int] = {}
        self.producer_lost: BaseException | None = None

    async def publish_hints(self) -> int:
        return 0

    async def publish_pending(self, share: float = 1.0) -> int:
        self.tries_cycles += 1
        self.covered = dict(self.positions)
        return 0


class Table:
    async def send_batches(self) -> None:
        return None

    async def wait_changelog(self) -> int:
        return 0


class Sends:
    async def wait(self) -> int:
        return 0


class Consumer:
    def __init__(self) -> None:
        self.committed: list[dict[Any, int]] = []

    def assignment(self) -> set[Any]:
        return {RUNS0, RUNS1}

    async def commit(self, offsets: dict[Any, int]) -> bool:
        self.committed.append(dict(offsets))
        return True


def checkpoint() -> tuple[Checkpoint, Publisher, Consumer]:
    publisher = Publisher()
    store = StateStore(SimTable(LocalStore(), Changelog(), None), max_bytes=1 << 20)
    point = Checkpoint(store, Table(), Sends(), publisher, WorkerMetrics())  # type: ignore[arg-type]
    consumer = Consumer()
    point._consumer, point._commit_offsets = consumer, consumer.commit
    return point, publisher, consumer


async def test_offsets_wait_for_the_tries_that_cover_them() -> None:
    point, publisher, consumer = checkpoint()
    assert not await point.commit({RUNS0: 100}, consumer, consumer.commit, 1.0)
    assert consumer.committed == []  # no tries cycle yet: nothing committed
    publisher.covered = {("runs", 0): 80, ("runs", 1): 5}
    assert await point.catch_up()
    assert consumer.committed == [{RUNS0: 80}]  # RUNS1: faust asked for nothing there
    publisher.covered = {("runs", 0): 150}
    assert await point.catch_up()  # no new record since: still committed
    assert consumer.committed[-1] == {RUNS0: 100}
    assert not await point.catch_up()  # nothing new to commit
    assert await point.commit({RUNS0: 200, RUNS1: 30}, consumer, consumer.commit, 1.0)
    assert consumer.committed[-1] == {RUNS0: 150}  # RUNS1 not covered at all yet


async def test_a_stopping_commit_publishes_tries_and_commits_everything() -> None:
    point, publisher, consumer = checkpoint()
    publisher.positions = {("runs", 0): 300, ("runs", 1): 40}
    assert await point.commit({RUNS0: 300, RUNS1: 40}, consumer, consumer.commit, 1.0, True)
    assert publisher.tries_cycles == 1
    assert consumer.committed == [{RUNS0: 300, RUNS1: 40}]


async def test_a_rebalance_forgets_what_was_asked_and_committed() -> None:
    point, publisher, consumer = checkpoint()
    publisher.covered = {("runs", 0): 500}
    await point.commit({RUNS0: 400}, consumer, consumer.commit, 1.0)
    point.reset()  # another worker may have committed further meanwhile
    assert not await point.catch_up()  # nothing asked since: nothing committed, no regression
    assert consumer.committed == [{RUNS0: 400}]


async def test_no_offset_is_committed_once_the_output_producer_cannot_send() -> None:
    """Hints that failed then are not out: the runs behind them must be read again, and
    published again, by the restarted worker."""
    point, publisher, consumer = checkpoint()
    publisher.covered = {("runs", 0): 100}
    assert await point.commit({RUNS0: 50}, consumer, consumer.commit, 1.0)
    publisher.producer_lost = RuntimeError("OutOfOrderSequenceNumber")
    assert not await point.commit({RUNS0: 100}, consumer, consumer.commit, 1.0)
    assert not await point.catch_up()
    assert consumer.committed == [{RUNS0: 50}]
