"""The spool on disk: round trips, damage confined to its file, leftovers, the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from worker.recorder import SpoolLockedError
from worker.recorder.spool import MAGIC, Spool, decode, encode

REPO = Path(__file__).resolve().parents[3]


def records(n: int, tag: str = "r") -> tuple[list[bytes], list[bytes]]:
    keys = [f"agent-{i % 3}".encode() for i in range(n)]
    values = [f'{{"id":"{tag}-{i}","pad":"{"x" * i}"}}'.encode() for i in range(n)]
    return keys, values


def test_segments_round_trip_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first = spool.write(*records(3, "a"))
    second = spool.write(*records(5, "b"))
    spool.close()
    again = Spool(tmp_path)
    found, damaged = again.scan()
    assert damaged == 0
    assert [s.path for s in found] == [first.path, second.path]
    assert [s.runs for s in found] == [3, 5]
    loaded = again.load(found[1])
    assert (loaded.keys, loaded.values) == records(5, "b")
    assert found[0].size == first.path.stat().st_size


def test_damage_keeps_the_intact_records_and_spares_other_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    good = spool.write(*records(4, "good"))
    truncated = spool.write(*records(6, "cut"))
    flipped = spool.write(*records(5, "flip"))
    garbage = tmp_path / "0-0-000000.seg"
    garbage.write_bytes(b"not a spool file at all")
    spool.close()
    # a crash without fsync can leave a file cut short; a disk can flip a byte
    data = truncated.path.read_bytes()
    truncated.path.write_bytes(data[: len(data) - 10])
    flip = bytearray(flipped.path.read_bytes())
    third_record = len(encode(*[part[:2] for part in records(5, "flip")]))
    flip[third_record + 9] ^= 0xFF
    flipped.path.write_bytes(bytes(flip))

    again = Spool(tmp_path)
    found, damaged = again.scan()
    assert damaged == 3
    kept = {}
    for segment in found:
        again.load(segment)
        for value in segment.values:
            kept[value] = segment.path
    want_good = set(records(4, "good")[1])
    want_cut = set(records(6, "cut")[1][:5])  # the last record was cut
    want_flip = set(records(5, "flip")[1][:2])  # records before the damaged one
    assert set(kept) == want_good | want_cut | want_flip
    assert all(kept[v] == good.path for v in want_good)
    corrupt = sorted(p.name for p in (tmp_path / "corrupt").iterdir())
    assert corrupt == sorted([truncated.path.name, flipped.path.name, garbage.name])
    # the next scan finds nothing damaged: the intact records live in new segments
    again.close()
    assert Spool(tmp_path).scan()[1] == 0


def test_decode_reports_where_the_damage_is() -> None:
    data = encode(*records(2))
    assert decode(data).damage is None
    assert "bad header" in (decode(b"XX" + data[2:]).damage or "")
    assert "truncated record at byte" in (decode(data[:-1]).damage or "")
    assert decode(MAGIC).values == [] and decode(MAGIC).damage is None


def test_unfinished_tmp_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / "123-1-000001.seg.tmp").write_bytes(encode(*records(2)))
    spool = Spool(tmp_path)
    assert list(tmp_path.glob("*.tmp")) == []
    assert spool.scan() == ([], 0)


def test_rewrite_keeps_only_what_is_left_and_deletes_when_nothing_is(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    segment = spool.write(*records(5))
    spool.rewrite(segment, [1, 3])
    assert decode(segment.path.read_bytes()).values == [records(5)[1][1], records(5)[1][3]]
    assert segment.runs == 2 and segment.size == segment.path.stat().st_size
    spool.rewrite(segment, [])
    assert not segment.path.exists()


def test_rejected_records_are_kept_apart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = spool.reject(*records(2))
    assert path.parent == tmp_path / "rejected"
    assert decode(path.read_bytes()).values == records(2)[1]
    assert spool.scan() == ([], 0)  # not sent again


def test_one_recorder_per_directory_and_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolLockedError, match=f"pid {os.getpid()}"):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()  # free again

    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from worker.recorder.spool import Spool
            Spool({str(tmp_path)!r})
            print("locked", flush=True)
            time.sleep(600)
        """)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        with pytest.raises(SpoolLockedError, match=f"pid {holder.pid}"):
            Spool(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    Spool(tmp_path).close()  # kill -9 released it


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="spool directory"):
        Spool(blocker / "spool")
