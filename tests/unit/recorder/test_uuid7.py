"""Run ids: UUID version 7, time-ordered, increasing within a process, unique."""

from __future__ import annotations

import itertools
import os
import threading
import time

from worker.recorder.uuid7 import uuid7, uuid7_unix_ms


def test_version_variant_and_timestamp() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"
    assert before <= uuid7_unix_ms(value) <= after


def test_ids_increase_within_one_millisecond_and_when_the_clock_steps_back() -> None:
    ids = [uuid7(unix_ms=1_700_000_000_000) for _ in range(1000)]
    ids.append(uuid7(unix_ms=1_600_000_000_000))  # clock stepped back a long way
    assert all(a.int < b.int for a, b in itertools.pairwise(ids))
    assert len({i.version for i in ids}) == 1 and ids[-1].version == 7


def test_later_milliseconds_sort_later() -> None:
    first = uuid7(unix_ms=2_000_000_000_000)
    second = uuid7(unix_ms=2_000_000_000_001)
    assert str(first) < str(second)
    assert uuid7_unix_ms(second) == 2_000_000_000_001


def test_unique_across_threads() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def make(bucket: list[str]) -> None:
        bucket.extend(str(uuid7()) for _ in range(5000))

    threads = [threading.Thread(target=make, args=(bucket,)) for bucket in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for bucket in made for value in bucket]
    assert len(set(every)) == len(every) == 40_000
    for bucket in made:  # each thread sees increasing ids
        assert bucket == sorted(bucket)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ms = 2_100_000_000_000
    uuid7(unix_ms=ms)  # both processes continue from this state, in the same millisecond
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, "\n".join(str(uuid7(unix_ms=ms)) for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {str(uuid7(unix_ms=ms)) for _ in range(100)}
    assert len(child) == 100 and not child & parent
