"""A model of what faust does with the state table, for crash tests without Kafka.

- `Changelog`: the records sent, in order; the broker acknowledges a prefix of them.
- `LocalStore`: a worker's RocksDB: every write at once, plus the offset of the last
  acknowledged changelog record (faust's "persisted offset").
- `SimTable`: the table the state cache sees (get, set, delete, `last_sent`).
- Recovery as faust does it: a store that survived applies the changelog records after its
  persisted offset; a lost one is rebuilt from the whole changelog.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class Crash(Exception):
    """The process died (kill -9) at this write."""


@dataclass
class Receipt:
    """What `StateTable.put` returns: applied once acknowledged and in the local store."""

    applied: bool = False


@dataclass
class Changelog:
    """The records sent, in order (key, value; None deletes); `acked` of them acknowledged."""

    records: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    acked: int = 0

    def lose_unacked(self, keep: int) -> None:
        """A crash: the broker got `keep` of the unacknowledged records, the rest are lost."""
        del self.records[self.acked + keep :]
        self.acked = len(self.records)


@dataclass
class LocalStore:
    """A worker's RocksDB: records applied once acknowledged, and the index of the first
    changelog record not applied (faust's persisted offset + 1)."""

    data: dict[bytes, bytes] = field(default_factory=dict)
    persisted: int = 0

    @classmethod
    def rebuilt(cls, changelog: Changelog) -> LocalStore:
        store = cls()
        store.recover(changelog)
        return store

    def apply(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    def recover(self, changelog: Changelog) -> None:
        """faust's recovery: the changelog records after the persisted offset, in order."""
        for key, value in changelog.records[self.persisted :]:
            self.apply(key, value)
        self.persisted = len(changelog.records)


class SimTable:
    """`StateTable` over a local store and the changelog: `put` sends, `acknowledge` lets the
    broker acknowledge everything sent and applies it locally, in order."""

    def __init__(self, store: LocalStore, changelog: Changelog, crash_after: int | None) -> None:
        self.store = store
        self.changelog = changelog
        self.crash_after = crash_after  # writes allowed before the process dies
        self._receipts: list[Receipt] = []

    def get(self, key: bytes) -> bytes | None:
        return self.store.data.get(key)

    def put(self, partition: int, key: bytes, value: bytes | None) -> Receipt:
        if self.crash_after is not None:
            if self.crash_after <= 0:
                raise Crash
            self.crash_after -= 1
        self.changelog.records.append((key, value))
        receipt = Receipt()
        self._receipts.append(receipt)
        return receipt

    def acknowledge(self, upto: int | None = None) -> None:
        """The broker acknowledges the records sent before index `upto` (all: None), and each
        is applied to the local store, in order, as `StateTable` does."""
        end = len(self.changelog.records) if upto is None else upto
        if end <= self.store.persisted:
            return
        for key, value in self.changelog.records[self.store.persisted : end]:
            self.store.apply(key, value)
        done = end - self.store.persisted
        self.changelog.acked = self.store.persisted = end
        for receipt in self._receipts[:done]:
            receipt.applied = True
        del self._receipts[:done]

    def crashed(self, reached: int, applied: int) -> None:
        """The process died: `reached` of its unacknowledged records reached the broker, and
        of those, the first `applied` reached the local store too."""
        self.changelog.lose_unacked(keep=reached)
        end = min(self.store.persisted + applied, len(self.changelog.records))
        for key, value in self.changelog.records[self.store.persisted : end]:
            self.store.apply(key, value)
        self.store.persisted = end
