"""The window of learned run ids: at least `window` remembered, forgotten a chunk at a time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.learner.run_ids import CHUNK_IDS, RunIds, split_ids


def test_duplicates_are_refused_and_counted_once() -> None:
    ids = RunIds(window=1000)
    assert ids.add(7) and not ids.add(7)
    assert 7 in ids and 8 not in ids and len(ids) == 1 and ids.added == 1


@given(window=st.integers(1, 700), count=st.integers(0, 2_000))
def test_at_least_the_last_window_ids_are_kept_and_at_most_a_chunk_more(window, count) -> None:
    ids = RunIds(window)
    for run_id in range(count):
        ids.add(run_id)
    kept = [run_id for run_id in range(count) if run_id in ids]
    assert kept == list(range(count - len(kept), count))  # the newest, without gaps
    assert len(kept) >= min(window, count)
    assert len(kept) < window + CHUNK_IDS + CHUNK_IDS
    chunks = [ids.chunk(n) for n in range(ids.first_chunk, ids.next_chunk)]
    stored = [i for blob in [*chunks, ids.open_ids()] for i in split_ids(blob)]
    assert stored == kept  # the chunks and the open ids are exactly the window, in order


def test_a_window_of_zero_remembers_nothing() -> None:
    ids = RunIds(0)
    assert not ids.add(1) and 1 not in ids


def test_restored_chunks_and_a_lost_one() -> None:
    source = RunIds(10_000)
    for run_id in range(3 * CHUNK_IDS + 5):
        source.add(run_id)
    restored = RunIds(10_000, first_chunk=0)
    restored.add_chunk(source.chunk(0))
    restored.add_chunk(b"")  # lost: counts as a chunk, its ids are not known
    restored.add_chunk(source.chunk(2))
    for run_id in split_ids(source.open_ids()):
        restored.add(run_id)
    assert 0 in restored and CHUNK_IDS not in restored and 2 * CHUNK_IDS in restored
    assert restored.next_chunk == source.next_chunk
    with pytest.raises(ValueError, match="chunk holds"):
        restored.add_chunk(b"x" * 16)
    with pytest.raises(ValueError, match="whole number"):
        list(split_ids(b"x" * 17))
