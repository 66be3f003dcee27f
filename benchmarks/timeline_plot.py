"""Produce -> hints across a latency phase, one line per `python -m benchmarks.e2e --json` file.

    python -m benchmarks.timeline_plot OUT.png "1 GiB cache=a.json" "2 GiB cache=b.json"

Each line is the p99 (solid) and p50 (dashed) of the runs sent in each `--bin` seconds of the
phase: whether a tail is steady, periodic (tries cycles) or growing (a state cache too small).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from benchmarks.harness import percentile

TARGET_S = 0.25  # issue 23's live p99
PROMISE_S = 1.0  # SPEC's promise


def binned(
    timeline: list[list[float]], width: float, seconds: float
) -> list[tuple[float, float, float]]:
    """(bin start s, p50 s, p99 s) of the runs sent in each whole `width` seconds of a
    `seconds` phase (a last, partial bin holds too few runs to say much)."""
    bins: dict[int, list[float]] = {}
    for sent, took in timeline:
        key = int(sent // width)
        if (key + 1) * width <= seconds + 1e-6:
            bins.setdefault(key, []).append(took)
    return [
        (key * width, percentile(values, 50), percentile(values, 99))
        for key, values in sorted(bins.items())
    ]


def plot(series: list[tuple[str, list[tuple[float, float, float]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for index, (label, points) in enumerate(series):
        color = f"C{index}"
        xs = [x for x, _, _ in points]
        ax.plot(xs, [p99 * 1000 for _, _, p99 in points], color=color, label=f"{label}: p99")
        ax.plot(xs, [p50 * 1000 for _, p50, _ in points], color=color, linestyle="--", label="p50")
    ax.axhline(TARGET_S * 1000, color="black", linewidth=0.7, linestyle=":")
    ax.axhline(PROMISE_S * 1000, color="red", linewidth=0.7, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the latency phase (when the run was sent)")
    ax.set_ylabel("produce -> hints, ms (log)")
    ax.set_title("produce -> hints across the phase (dotted: 250 ms target, 1 s promise)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timeline_plot", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", nargs="+", metavar="LABEL=FILE", help="an e2e --json file")
    parser.add_argument("--bin", type=float, default=3.0, help="seconds per point")
    args = parser.parse_args(argv)
    series = []
    for item in args.runs:
        label, _, path = item.rpartition("=")
        latency = orjson.loads(Path(path).read_bytes()).get("latency") or {}
        points = binned(latency.get("timeline") or [], args.bin, latency.get("seconds", 0.0))
        if not points:
            parser.error(f"{path} has no latency timeline (run e2e with a latency phase)")
        series.append((label or path, points))
    plot(series, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
