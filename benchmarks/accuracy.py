"""How accurate hints are (SPEC 10) as agents accumulate runs: ours beside the baselines.

Two inputs: the bench workload (`worker/demo_workload.py`'s generator as benchmarks/e2e.py
uses it: 20,000 runs of 100 agents, seed 7) and the 30 runs that NeMo Relay's own runtime
recorded from a scripted agent (tests/data/nemo_relay_30runs.jsonl). For each, prints
`replay --evaluate`'s table and how long the evaluation took, and draws osl coverage and
osl MAE against how many runs the agent had learned before the call's run (docs/accuracy.png).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import orjson

from worker.commands.evaluation_table import evaluation_table
from worker.demo_workload import generate_runs
from worker.learner import LearnerConfig
from worker.learner.fleet_evaluation import Evaluation
from worker.models import Run, parse_run

REPO = Path(__file__).resolve().parents[1]
NEMO_RELAY_RUNS = REPO / "tests" / "data" / "nemo_relay_30runs.jsonl"
SCORERS = ("ours", "agent_default", "fleet", "nemo-flow")
COLORS = {"ours": "tab:blue", "agent_default": "tab:orange", "fleet": "tab:gray"}
#: (covered calls, osl abs error sum, scored calls) per scorer and runs learned
Curves = dict[str, dict[int, list[float]]]


def evaluate(runs: Iterable[Run], config: LearnerConfig) -> tuple[Evaluation, Curves, float]:
    """Learn and score every run; per scorer, totals by the agent's runs learned before."""
    evaluation = Evaluation(config)
    learned_before: dict[str, int] = defaultdict(int)
    curves: Curves = {name: defaultdict(lambda: [0.0, 0.0, 0.0]) for name in SCORERS}
    began = time.perf_counter()
    for run in runs:
        if evaluation.learn(run) is None:
            continue
        k = learned_before[run.agent_id]
        learned_before[run.agent_id] = k + 1
        for name, scores in evaluation.last.items():
            totals = curves[_name(name)][k]
            for score in scores:
                if score.source != "none":
                    totals[0] += score.covered
                    totals[1] += score.osl_error
                    totals[2] += 1
    return evaluation, curves, time.perf_counter() - began


def _name(scorer: str) -> str:
    return "nemo-flow" if scorer in ("nemo-flow", "corrected") else scorer


def bench_runs(count: int, agents: int, seed: int) -> list[Run]:
    start = 1_780_000_000_000_000_000  # fixed: the same runs every time
    return [
        parse_run(orjson.dumps(r)) for r in generate_runs(count, agents, seed=seed, start_ns=start)
    ]


def plot(panels: list[tuple[str, Curves, int]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 4 * len(panels)), squeeze=False)
    for row, (title, curves, width) in enumerate(panels):
        coverage_ax, mae_ax = axes[row]
        for name in SCORERS:
            points = _binned(curves[name], width)
            if not points:
                continue
            xs = [x for x, _, _ in points]
            style: dict[str, object] = {"color": COLORS.get(name, "tab:green")}
            style["label"] = _label(name)
            if name == "ours":
                style["linewidth"] = 3  # the other semantics' tokens, hence line, are the same
            if name == "nemo-flow":
                style["linestyle"] = "--"
            coverage_ax.plot(xs, [c for _, c, _ in points], **style)
            mae_ax.plot(xs, [m for _, _, m in points], **style)
        coverage_ax.axhline(0.9, color="black", linewidth=0.6, linestyle=":")
        coverage_ax.set_title(f"{title}\nosl coverage (share with y <= osl)", fontsize=10)
        coverage_ax.set_ylim(0, 1.02)
        mae_ax.set_title(f"{title}\nosl MAE (mean |p50 - y|, tokens)", fontsize=10)
        for ax in (coverage_ax, mae_ax):
            ax.set_xlabel(f"runs the agent had learned before ({width} per point)")
            ax.grid(alpha=0.3)
        coverage_ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _label(name: str) -> str:
    return {
        "ours": "ours (trie lookup)",
        "agent_default": "agent default",
        "fleet": "fleet-wide",
        "nemo-flow": "other semantics",
    }[name]


def _binned(curve: dict[int, list[float]], width: int) -> list[tuple[float, float, float]]:
    """(bin centre, coverage, MAE) per bin of `width` runs learned, where calls were scored."""
    bins: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for k, (covered, errors, scored) in curve.items():
        totals = bins[k // width]
        totals[0] += covered
        totals[1] += errors
        totals[2] += scored
    return [
        (b * width + (width - 1) / 2, c / n, e / n) for b, (c, e, n) in sorted(bins.items()) if n
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--semantics", choices=("corrected", "nemo-flow"), default="corrected")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "accuracy.png")
    args = parser.parse_args(argv)
    config = LearnerConfig(semantics=args.semantics)
    inputs = [
        (
            f"bench workload ({args.runs:,} runs, {args.agents} agents)",
            bench_runs(args.runs, args.agents, args.seed),
            max(1, args.runs // args.agents // 20),
        ),
        (
            "NeMo Relay runtime (30 runs)",
            [parse_run(line) for line in NEMO_RELAY_RUNS.read_bytes().splitlines() if line],
            1,
        ),
    ]
    panels = []
    for title, runs, width in inputs:
        evaluation, curves, seconds = evaluate(runs, config)
        print(f"\n{title}: evaluated in {seconds:.2f} s ({len(runs) / seconds:,.0f} runs/s)")
        sys.stdout.write(evaluation_table(evaluation.summary()).decode())
        panels.append((title, curves, width))
    plot(panels, args.out)
    print(f"\nplot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
