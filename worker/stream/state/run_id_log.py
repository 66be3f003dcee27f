"""One partition's learned run ids in the state table: sealed chunks written once, plus one
"open" record rewritten at each commit (SPEC 1: at least `dedupe_window` ids per partition).

The open record names the chunks in use (numbers first..end) and holds the ids not in them.
A chunk is written before the open record that first names it, and deleted only after an
open record that no longer names it, all in one changelog partition: any prefix of the
changelog that holds an open record holds the chunks it names. So the window read back is
always the one some open record described, and the cost per commit is the new ids (16 bytes
each) plus the open record (at most `CHUNK_IDS` ids).

Also the partition's owner token: a random number drawn each time this worker takes the
partition over, written into the agent records it creates (see `worker.stream.state.agent_records`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from worker.learner.run_ids import RunIds, id_bytes, split_ids
from worker.stream.state.records import (
    chunk_key,
    decode_chunk,
    decode_open_ids,
    encode_chunk,
    encode_open_ids,
    open_ids_key,
)

log = logging.getLogger(__name__)

Get = Callable[[bytes], bytes | None]
#: writes a value, or deletes the key when the value is None
Write = Callable[[bytes, bytes | None], object]


class PartitionLog:
    """The run id window of one partition and how much of it the table already holds."""

    def __init__(self, partition: int, window: int) -> None:
        self.partition = partition
        self.ids = RunIds(window)
        self.owner = secrets.randbits(63) | 1  # never 0: 0 means "no owner" in records
        self._written_end = 0  # chunks below this number were written
        self._deleted_to = 0  # chunks below this number are deleted (or never existed)
        self._written_added = -1  # `ids.added` when the open record was last written

    @classmethod
    def load(cls, partition: int, window: int, get: Get) -> PartitionLog:
        """The partition's window as the table holds it."""
        part = cls(partition, window)
        value = get(open_ids_key(partition))
        if value is None:
            return part
        first, end, open_ids = decode_open_ids(value)
        part.ids = RunIds(window, first_chunk=first)
        for number in range(first, end):
            chunk = get(chunk_key(partition, number))
            if chunk is None:
                log.error(
                    "run id chunk %d of partition %d is missing: its ids count again if seen",
                    number,
                    partition,
                )
                part.ids.add_chunk(b"")
            else:
                part.ids.add_chunk(decode_chunk(chunk))
        part._written_end = end
        part._deleted_to = first
        for run_id in split_ids(open_ids):
            part.ids.add(run_id)
        part._written_added = part.ids.added if part.ids.next_chunk == end else -1
        return part

    def add_stored(self, run_ids: bytes) -> bytearray:
        """Ids found in an agent's stored records (deltas, snapshot) that the window does not
        hold: they are added, and returned (that agent's next snapshot must carry them until
        the next `flush` has written them here)."""
        added = bytearray()
        for run_id in split_ids(run_ids):
            if self.ids.add(run_id):
                added += id_bytes(run_id)
        return added

    @property
    def unwritten(self) -> bool:
        """True when `flush` has something to write."""
        return self._written_added != self.ids.added or self._deleted_to < self.ids.first_chunk

    def flush(self, write: Write) -> int:
        """Write what changed: new chunks, the open record, then the deletion of chunks the
        window forgot. Returns how many records were written."""
        ids, written = self.ids, 0
        for number in range(max(self._written_end, ids.first_chunk), ids.next_chunk):
            write(chunk_key(self.partition, number), encode_chunk(ids.chunk(number)))
            written += 1
        self._written_end = max(self._written_end, ids.next_chunk)
        if self._written_added != ids.added:
            value = encode_open_ids(ids.first_chunk, ids.next_chunk, ids.open_ids())
            write(open_ids_key(self.partition), value)
            self._written_added = ids.added
            written += 1
        for number in range(self._deleted_to, ids.first_chunk):
            write(chunk_key(self.partition, number), None)
            written += 1
        self._deleted_to = max(self._deleted_to, ids.first_chunk)
        return written
