"""The run ids already learned: at least the last `window` of them (SPEC 1), to skip duplicates.

Ids are kept as 16-byte big-endian values in chunks of `CHUNK_IDS`, oldest first, plus an open
chunk still filling up. A chunk, once full, never changes, and the oldest goes as a whole once
the newer ones hold `window` ids without it: so between `window` and `window + CHUNK_IDS` ids
are remembered, and the worker can store each full chunk once (`worker.stream.state.run_id_log`).
Chunks are numbered from 0 in the order they filled; `first_chunk` is the oldest one held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

CHUNK_IDS = 128
ID_BYTES = 16
CHUNK_BYTES = CHUNK_IDS * ID_BYTES


def id_bytes(run_id: int) -> bytes:
    return run_id.to_bytes(ID_BYTES, "big")


def split_ids(blob: bytes) -> Iterator[int]:
    """The run ids packed in `blob` (16 bytes each)."""
    if len(blob) % ID_BYTES:
        raise ValueError(f"{len(blob)} bytes is not a whole number of run ids")
    for i in range(0, len(blob), ID_BYTES):
        yield int.from_bytes(blob[i : i + ID_BYTES], "big")


class RunIds:
    """A window of learned run ids: membership, and the chunks that make it up."""

    __slots__ = ("_chunks", "_open", "_seen", "added", "first_chunk", "window")

    def __init__(self, window: int, first_chunk: int = 0) -> None:
        self.window = window
        #: the number of the oldest full chunk held (the next one to fill, when none is held)
        self.first_chunk = first_chunk
        self._chunks: deque[bytes] = deque()
        self._open = bytearray()
        self._seen: set[int] = set()
        #: how many ids were added so far (tells a writer whether anything changed)
        self.added = 0

    def __contains__(self, run_id: int) -> bool:
        return run_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def next_chunk(self) -> int:
        """The number the open chunk will get once full."""
        return self.first_chunk + len(self._chunks)

    def chunk(self, number: int) -> bytes:
        """A full chunk's ids, by number (IndexError when it is not held)."""
        index = number - self.first_chunk
        if index < 0:
            raise IndexError(number)
        return self._chunks[index]

    def open_ids(self) -> bytes:
        """The ids not yet in a full chunk, oldest first."""
        return bytes(self._open)

    def add(self, run_id: int) -> bool:
        """Remember `run_id`; False when it already was (or when the window is 0)."""
        if run_id in self._seen or not self.window:
            return False
        self._seen.add(run_id)
        self.added += 1
        self._open += id_bytes(run_id)
        if len(self._open) >= CHUNK_BYTES:
            self._chunks.append(bytes(self._open))
            self._open = bytearray()
            self._forget_oldest()
        return True

    def add_chunk(self, blob: bytes) -> None:
        """Append a full chunk read back from storage (restoring, oldest first); b"" stands
        for a chunk that was lost (it counts as full, its ids are forgotten)."""
        if blob and len(blob) != CHUNK_BYTES:
            raise ValueError(f"a chunk holds {CHUNK_BYTES} bytes of run ids, not {len(blob)}")
        if self._open:
            raise ValueError("chunks are restored before the open ids")
        self._chunks.append(blob)
        self._seen.update(split_ids(blob))
        self.added += 1

    def _forget_oldest(self) -> None:
        held = len(self._chunks) * CHUNK_IDS + len(self._open) // ID_BYTES
        while self._chunks and held - CHUNK_IDS >= self.window:
            self._seen.difference_update(split_ids(self._chunks.popleft()))
            self.first_chunk += 1
            held -= CHUNK_IDS
