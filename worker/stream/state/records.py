"""The records of the state table (RocksDB and its changelog): keys and value formats.

Per agent: a snapshot at the agent's key (its statistics, `AgentState.to_bytes`, inline or in
parts when large) and, after it, deltas keyed by sequence number (the runs learned in one
commit: their observations and ids). Per partition: the learned run ids, as sealed chunks
written once and one "open" record. Why this layout keeps every run exactly once is argued
in docs/operations.md ("Exactly once: the argument").

Keys: an agent's snapshot is its UTF-8 id (as in format 1, so old values are still found;
an id starting with NUL is escaped). Every other key starts with NUL, which no agent key
does, then a kind letter; variable parts come first and fixed-size parts last, so no two
different records share a key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import orjson

from worker.learner.accuracy import WINDOW, Pair, RecentAccuracy
from worker.learner.analysis import CallObservation
from worker.learner.run_ids import CHUNK_BYTES, ID_BYTES
from worker.learner.state import StateFormatError

#: a snapshot body larger than this is stored in parts of PART_BYTES (a changelog record
#: is limited by the topic's max.message.bytes, 1 MB by default)
INLINE_BYTES = 512 * 1024
PART_BYTES = 512 * 1024

_SNAPSHOT = b"\x02S"
_PART = b"\x02P"
_DELTA = b"\x02D"
_OPEN_IDS = b"\x02O"
_CHUNK = b"\x02C"
_SNAPSHOT_HEAD = struct.Struct("<QQHI")  # owner, up-to sequence, parts (0: inline), run ids
_DELTA_HEAD = struct.Struct("<QQII")  # owner, sequence number, runs, run ids
_OPEN_HEAD = struct.Struct("<QQ")  # first chunk held, end of the chunks referenced
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


# --- keys --------------------------------------------------------------------------------------


def agent_key(agent_id: str) -> bytes:
    raw = agent_id.encode()
    return b"\x00a" + raw if raw[:1] == b"\x00" else raw


def delta_key(agent_id: str, seq: int) -> bytes:
    return b"\x00d" + agent_id.encode() + b"\x00" + _U64.pack(seq)


def part_key(agent_id: str, owner: int, upto: int, part: int) -> bytes:
    return (
        b"\x00p"
        + agent_id.encode()
        + b"\x00"
        + _U64.pack(owner)
        + _U64.pack(upto)
        + (_U32.pack(part))
    )


def open_ids_key(partition: int) -> bytes:
    return b"\x00o" + _U32.pack(partition)


def chunk_key(partition: int, number: int) -> bytes:
    return b"\x00c" + _U32.pack(partition) + _U64.pack(number)


# --- agent snapshots ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotHead:
    """What the agent's key holds: who wrote the snapshot, the sequence number it takes, the
    ids of runs it added that the partition's run ids may not hold yet, and its body (inline)
    or how many parts hold it."""

    owner: int
    upto: int
    parts: int
    run_ids: bytes = b""
    body: bytes = b""


def is_legacy_state(value: bytes) -> bool:
    """A format-1 value: the whole state and the agent's run ids in one record."""
    return value[:1] == b"\x01"


def encode_snapshot(
    owner: int, upto: int, run_ids: bytes, body: bytes
) -> tuple[bytes, list[bytes]]:
    """(the head value, the part values): inline when the body is small, else in parts."""
    id_count = len(run_ids) // ID_BYTES
    if len(body) <= INLINE_BYTES:
        head = _SNAPSHOT_HEAD.pack(owner, upto, 0, id_count)
        return _SNAPSHOT + head + run_ids + body, []
    parts = [_PART + body[i : i + PART_BYTES] for i in range(0, len(body), PART_BYTES)]
    return _SNAPSHOT + _SNAPSHOT_HEAD.pack(owner, upto, len(parts), id_count) + run_ids, parts


def decode_snapshot_head(value: bytes) -> SnapshotHead:
    _expect(value, _SNAPSHOT, _SNAPSHOT_HEAD.size, "snapshot")
    owner, upto, parts, id_count = _SNAPSHOT_HEAD.unpack_from(value, 2)
    start = 2 + _SNAPSHOT_HEAD.size
    end = start + id_count * ID_BYTES
    if len(value) < end or (parts and len(value) != end):
        raise StateFormatError("unreadable snapshot record")
    return SnapshotHead(owner, upto, parts, value[start:end], value[end:])


def decode_part(value: bytes) -> bytes:
    _expect(value, _PART, 0, "snapshot part")
    return value[2:]


# --- agent deltas ------------------------------------------------------------------------------


@dataclass(slots=True)
class Delta:
    """The runs one commit added to an agent: their observations and ids, the (covered, osl
    error) pairs their scored calls added to its recent accuracy (None in deltas written
    before scoring existed: folding scores them again), and each call's model (adaptive rule
    set with priors; None in deltas without them)."""

    owner: int
    seq: int
    runs: int
    run_ids: bytes
    observations: list[CallObservation] = field(default_factory=list)
    recent: list[Pair] | None = None
    models: list[str | None] | None = None


def encode_delta(
    owner: int,
    seq: int,
    runs: int,
    run_ids: bytes,
    observations: list[CallObservation],
    recent: list[Pair],
    models: list[str | None] | None = None,
) -> bytes:
    """Observations column-wise, call names once each (about 25 bytes per LLM call), then
    the recent-accuracy pairs as two columns (only the last `WINDOW` can matter), then, when
    there are `models`, each call's model as a reference into a list of them (null: none)."""
    names: dict[str, int] = {}
    name_refs = [names.setdefault(o[0], len(names)) for o in observations]
    columns = [list(c) for c in zip(*observations, strict=True)][1:] if observations else [[]] * 5
    recent = recent[-WINDOW:]
    covered, errors = [int(c) for c, _ in recent], [e for _, e in recent]
    head = _DELTA_HEAD.pack(owner, seq, runs, len(run_ids) // ID_BYTES)
    parts = [list(names), name_refs, *columns, covered, errors]
    if models is not None:
        known: dict[str, int] = {}
        refs = [None if m is None else known.setdefault(m, len(known)) for m in models]
        parts += [list(known), refs]
    return _DELTA + head + run_ids + orjson.dumps(parts)


def decode_delta(value: bytes) -> Delta:
    _expect(value, _DELTA, _DELTA_HEAD.size, "delta")
    owner, seq, runs, id_count = _DELTA_HEAD.unpack_from(value, 2)
    start = 2 + _DELTA_HEAD.size
    ids_end = start + id_count * ID_BYTES
    try:
        data = orjson.loads(value[ids_end:])
        names, refs, columns = data[0], data[1], data[2:7]
        observations = [
            (names[ref], *row) for ref, row in zip(refs, zip(*columns, strict=True), strict=True)
        ]
        recent = models = None
        if len(data) >= 9:
            recent = RecentAccuracy.load(data[7:9]).pairs
        if len(data) == 11:
            known, refs = data[9], data[10]
            if len(refs) != len(observations):
                raise ValueError("a model per observation")
            models = [None if ref is None else known[ref] for ref in refs]
        elif len(data) not in (7, 9):
            raise ValueError(f"{len(data)} columns")
    except (ValueError, TypeError, IndexError) as exc:
        raise StateFormatError(f"unreadable delta record: {exc}") from None
    return Delta(owner, seq, runs, value[start:ids_end], observations, recent, models)


# --- a partition's run ids ---------------------------------------------------------------------


def encode_open_ids(first_chunk: int, referenced_end: int, run_ids: bytes) -> bytes:
    return _OPEN_IDS + _OPEN_HEAD.pack(first_chunk, referenced_end) + run_ids


def decode_open_ids(value: bytes) -> tuple[int, int, bytes]:
    """(first chunk, end of the referenced chunks, the ids not in them)."""
    _expect(value, _OPEN_IDS, _OPEN_HEAD.size, "open run ids")
    first, end = _OPEN_HEAD.unpack_from(value, 2)
    ids = value[2 + _OPEN_HEAD.size :]
    if end < first or len(ids) % ID_BYTES:
        raise StateFormatError("unreadable open run ids record")
    return first, end, ids


def encode_chunk(run_ids: bytes) -> bytes:
    return _CHUNK + run_ids


def decode_chunk(value: bytes) -> bytes:
    _expect(value, _CHUNK, 0, "run id chunk")
    if len(value) - 2 != CHUNK_BYTES:
        raise StateFormatError("run id chunk of the wrong size")
    return value[2:]


def _expect(value: bytes, tag: bytes, head: int, what: str) -> None:
    if value[:2] != tag or len(value) < 2 + head:
        raise StateFormatError(f"not a {what} record (starts {value[:4]!r})")
