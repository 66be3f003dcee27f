"""The benchmark's plot: run makespan per agent program and arm, one panel per load."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.dynamo.programs import PROGRAMS
from benchmarks.dynamo.report import summarize


def plot(results: dict[str, Any], path: Path) -> Path:
    """Bars: median p50 makespan over repeats; whiskers: the median p90 (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(results)
    groups = [*PROGRAMS, "all"]
    arms = results["arms"]
    loads = results["loads"]
    fig, axes = plt.subplots(1, len(loads), figsize=(6.5 * len(loads), 4.2), squeeze=False)
    width = 0.8 / len(arms)
    for ax, load in zip(axes[0], loads, strict=True):
        for a, arm in enumerate(arms):
            figures = table.get((load, arm))
            if not figures:
                continue
            p50 = [statistics.median(figures[f"{g} p50"]) for g in groups]
            p90 = [statistics.median(figures[f"{g} p90"]) for g in groups]
            xs = [g + (a - (len(arms) - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, p50, width, label=arm)
            ax.errorbar(xs, p90, fmt="_", color="black", markersize=8)
            ax.vlines(xs, p50, p90, color="black", linewidth=0.8)
        ax.set_xticks(range(len(groups)), [*PROGRAMS, "all runs"])
        ax.set_title(f"{load:g}x capacity: run makespan p50 (bar), p90 (tick)")
        ax.set_ylabel("seconds")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(title="priority policy", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
