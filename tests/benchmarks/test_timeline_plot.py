"""The latency timeline of `benchmarks.e2e` and its plot's bins."""

from __future__ import annotations

from pathlib import Path

import orjson

from benchmarks.e2e import timeline_lines
from benchmarks.timeline_plot import binned, main


def test_bins_hold_the_runs_sent_in_them_and_a_partial_last_bin_is_left_out() -> None:
    timeline = [[0.5, 0.1], [1.0, 0.3], [2.9, 0.2], [3.1, 2.0], [5.9, 1.0], [6.2, 9.0]]
    assert binned(timeline, 3.0, 6.5) == [(0.0, 0.2, 0.298), (3.0, 1.5, 1.99)]


def test_a_phase_of_30_s_or_more_gets_ten_slices_and_a_shorter_one_none() -> None:
    timeline = [(second + 0.5, 0.1 if second < 27 else 1.0) for second in range(30)]
    (line,) = timeline_lines(timeline, 30.0)
    assert line.count(" ms/") == 10
    assert line.startswith("  p50/p99 by when sent: 0s 100 ms/100 ms")
    assert line.endswith("27s 1000 ms/1000 ms")
    assert timeline_lines(timeline, 20.0) == []


def test_the_plot_is_written_from_e2e_json(tmp_path: Path) -> None:
    source = tmp_path / "run.json"
    timeline = [[i / 10, 0.1] for i in range(100)]
    source.write_bytes(orjson.dumps({"latency": {"seconds": 10.0, "timeline": timeline}}))
    out = tmp_path / "plot.png"
    assert main([str(out), f"run={source}"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
