"""The on-disk spool: finished runs the broker has not acknowledged yet, in segment files.

Every finished run is written here (in batches) before it is sent, and its segment file is
deleted once the broker acknowledged every run in it; so a run leaves the disk only when it
is in Kafka, whatever happens to the process. The next recorder on the same directory sends
what is left.

Crash safety:
- a segment is written to `<name>.tmp`, fsync'ed, renamed into place and the directory
  fsync'ed: a segment file is complete or absent. A `.tmp` left by a crash held runs that
  were never on disk completely; it is removed.
- each record is framed (key length, value length, key, value, CRC32), so damage (a disk
  error, a file truncated by a crash without fsync) is detected record by record: the
  intact records before it are kept and sent, the file is moved to `corrupt/` and counted,
  and the other files are unaffected.
- a segment whose runs were partly acknowledged at close is rewritten (same way, atomic)
  with only the rest.
- one recorder at a time: `LOCK` is held with `flock` (released by the OS if the process
  dies), a second recorder on the directory gets SpoolLockedError.

Records the broker refuses for good (too large for the topic...) go to `rejected/` in the
same format, never silently dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from worker.recorder.errors import SpoolLockedError

log = logging.getLogger(__name__)

MAGIC = b"AHRSPOOL1\n"
_LENGTHS = struct.Struct(">II")  # key length, value length
_CRC = struct.Struct(">I")
#: bytes a record takes in a segment besides its key and value
FRAME_OVERHEAD = _LENGTHS.size + _CRC.size
#: a length beyond this is damage, not a record
_MAX_PART = 1 << 30
SUFFIX = ".seg"
LOCK_NAME = "LOCK"


@dataclass
class Segment:
    """One spool file and, while it is being sent, its records."""

    path: Path
    runs: int
    size: int
    keys: list[bytes] = field(default_factory=list, repr=False)
    values: list[bytes] = field(default_factory=list, repr=False)

    @property
    def loaded(self) -> bool:
        return len(self.values) == self.runs


@dataclass
class Decoded:
    keys: list[bytes]
    values: list[bytes]
    #: what is wrong with the file past its intact records, or None
    damage: str | None


def frame_size(key: bytes, value: bytes) -> int:
    return len(key) + len(value) + FRAME_OVERHEAD


def encode(keys: list[bytes], values: list[bytes]) -> bytes:
    """A segment file's bytes."""
    parts = [MAGIC]
    for key, value in zip(keys, values, strict=True):
        lengths = _LENGTHS.pack(len(key), len(value))
        crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(lengths)))
        parts += (lengths, key, value, _CRC.pack(crc))
    return b"".join(parts)


def decode(data: bytes) -> Decoded:
    """The intact records at the start of a segment file, and what damage follows them."""
    keys: list[bytes] = []
    values: list[bytes] = []
    if not data.startswith(MAGIC):
        return Decoded(keys, values, "not a spool segment (bad header)")
    pos, size = len(MAGIC), len(data)
    while pos < size:
        if pos + _LENGTHS.size > size:
            return Decoded(keys, values, f"truncated record at byte {pos}")
        key_len, value_len = _LENGTHS.unpack_from(data, pos)
        if key_len > _MAX_PART or value_len > _MAX_PART:
            return Decoded(keys, values, f"impossible record length at byte {pos}")
        key_start = pos + _LENGTHS.size
        value_start = key_start + key_len
        crc_start = value_start + value_len
        end = crc_start + _CRC.size
        if end > size:
            return Decoded(keys, values, f"truncated record at byte {pos}")
        key = data[key_start:value_start]
        value = data[value_start:crc_start]
        crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(data[pos:key_start])))
        if _CRC.unpack_from(data, crc_start)[0] != crc:
            return Decoded(keys, values, f"checksum mismatch in the record at byte {pos}")
        keys.append(key)
        values.append(value)
        pos = end
    return Decoded(keys, values, None)


class Spool:
    """A spool directory, locked for this process while open. Not thread-safe: one user."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory).absolute()  # immune to a later chdir
        self.fsync = fsync
        self._seq = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"spool directory {self.directory}: {exc.strerror}") from exc
        self._lock_fd: int | None = _lock(self.directory / LOCK_NAME)
        for leftover in self.directory.glob(f"*{SUFFIX}.tmp"):
            log.warning("spool: removing %s, a segment a crash left unfinished", leftover)
            leftover.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the lock; the files stay for the next recorder."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def scan(self) -> tuple[list[Segment], int]:
        """The segments on disk, oldest first (records not loaded), and how many were damaged.

        A damaged file's intact records are rewritten into a new segment; the file itself
        moves to `corrupt/`."""
        segments: list[Segment] = []
        damaged = 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                data = path.read_bytes()
            except OSError as exc:
                log.error("spool: cannot read %s (%s); left in place", path, exc.strerror)
                continue
            decoded = decode(data)
            if decoded.damage is None:
                segments.append(Segment(path, len(decoded.values), len(data)))
                continue
            damaged += 1
            kept = self.write(decoded.keys, decoded.values) if decoded.values else None
            moved = self._quarantine(path)
            log.error(
                "spool: %s is damaged (%s); %d intact runs before the damage kept%s; "
                "file moved to %s",
                path.name,
                decoded.damage,
                len(decoded.values),
                f" in {kept.path.name}" if kept else "",
                moved,
            )
            if kept is not None:
                kept.keys, kept.values = [], []
                segments.append(kept)
        return segments, damaged

    def load(self, segment: Segment) -> Segment:
        """Read a scanned segment's records (a file damaged since the scan keeps its prefix)."""
        decoded = decode(segment.path.read_bytes())
        if decoded.damage is not None:
            log.error("spool: %s damaged since start-up (%s)", segment.path, decoded.damage)
        segment.keys, segment.values = decoded.keys, decoded.values
        segment.runs = len(decoded.values)
        return segment

    def write(self, keys: list[bytes], values: list[bytes]) -> Segment:
        """A new segment holding these records, durably on disk when this returns."""
        self._seq += 1
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{SUFFIX}"
        size = self._write_atomic(path, encode(keys, values))
        return Segment(path, len(values), size, list(keys), list(values))

    def rewrite(self, segment: Segment, keep: list[int]) -> None:
        """Keep only the records at indices `keep` (atomically); delete the file if none."""
        if not keep:
            self.delete(segment)
            return
        keys = [segment.keys[i] for i in keep]
        values = [segment.values[i] for i in keep]
        segment.size = self._write_atomic(segment.path, encode(keys, values))
        segment.keys, segment.values, segment.runs = keys, values, len(values)

    def delete(self, segment: Segment) -> None:
        # no fsync: a deletion undone by a power cut only re-sends runs the worker dedupes
        segment.path.unlink(missing_ok=True)

    def reject(self, keys: list[bytes], values: list[bytes]) -> Path:
        """Keep records the broker refused for good under `rejected/`."""
        directory = self.directory / "rejected"
        directory.mkdir(exist_ok=True)
        self._seq += 1
        path = directory / f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{SUFFIX}"
        self._write_atomic(path, encode(keys, values))
        return path

    def _quarantine(self, path: Path) -> Path:
        directory = self.directory / "corrupt"
        directory.mkdir(exist_ok=True)
        target = directory / path.name
        path.replace(target)
        return target

    def _write_atomic(self, path: Path, data: bytes) -> int:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
        if self.fsync:
            _fsync_directory(path.parent)
        return len(data)


def _lock(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise OSError(
            exc.errno, f"spool directory {path.parent}: cannot open {path.name}: {exc.strerror}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = b""
        with contextlib.suppress(OSError):
            holder = os.pread(fd, 64, 0).strip()
        os.close(fd)
        who = f" (pid {holder.decode(errors='replace')})" if holder else ""
        raise SpoolLockedError(
            f"spool directory {path.parent} is in use by another recorder{who}; "
            "give each recorder its own spool_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
