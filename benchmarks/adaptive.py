"""The adaptive rule set against corrected on the scenario fleets (issue 24's targets).

For each seeded scenario of `benchmarks.scenarios` (stationary, drift, drift_every,
cold_start, boundary) it runs `replay --evaluate` under `adaptive` (whose evaluation learns
the same runs under `corrected` beside it) and prints one table: per scenario, corrected,
adaptive on every call it served, adaptive on the calls corrected served too (the
like-for-like comparison), and the `agent_default` baseline; then each target of issue 24,
met or not. For the drift scenarios it also prints a bound no forgetting rule can beat: an
oracle told each changed agent's change point, which forgets everything before it; and for
every scenario the bound no learner can pass: each call predicted from the distribution its
tokens were drawn from. It draws osl coverage and MAE against the runs each agent had
learned (docs/adaptive.png).

    python -m benchmarks.adaptive [--seed 24] [--out docs/adaptive.png]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path
from statistics import NormalDist
from typing import Any

import orjson

from benchmarks.accuracy import Curves, _binned
from benchmarks.scenarios import SCENARIOS, SPREAD, TRUE_MEDIAN
from worker.learner import AdaptiveSettings, LearnerConfig
from worker.learner.evaluation import CallScore
from worker.learner.fleet_evaluation import Evaluation, Tally
from worker.learner.kendall import tau_b
from worker.models import Run, parse_run

REPO = Path(__file__).resolve().parents[1]
ADAPTIVE = LearnerConfig(semantics="adaptive")
COLUMNS = ("served", "osl_coverage", "osl_mae", "osl_tau", "level_flips_per_100_runs")
TITLES = ("served", "osl coverage", "osl MAE", "tau", "flips/100 runs")
#: the drift scenarios, and the run (counted per agent from 0) from which their changed
#: agents behave otherwise
DRIFTS = ("drift", "drift_every")
CHANGE_RUN = 40
#: a lognormal's p90 is its median times exp(Z90 * sigma)
Z90 = NormalDist().inv_cdf(0.9)


class Scenario:
    """One scenario evaluated under adaptive, corrected beside it; rows of the table."""

    def __init__(
        self,
        name: str,
        runs: list[Run],
        focus: set[str] = frozenset(),
        known: dict[str, Any] | None = None,  # `known_distributions` of its runs
    ) -> None:
        self.name = name
        self.known = known
        #: level flips per 100 runs under corrected alone (the evaluation does not count them)
        self.corrected_flips = _flips(runs, LearnerConfig())
        self.evaluation = Evaluation(ADAPTIVE)
        self.same_calls = Tally()  # adaptive's scores on the calls corrected served
        #: both rule sets on the runs of the `focus` agents from run CHANGE_RUN on
        self.after_change = {"adaptive": Tally(), "corrected": Tally()}
        self.curves: dict[str, Curves] = {
            rule: {"ours": defaultdict(lambda: [0.0, 0.0, 0.0])}
            for rule in ("adaptive", "corrected")
        }
        learned_before: dict[str, int] = defaultdict(int)
        for run in runs:
            if self.evaluation.learn(run) is None:
                continue
            last = self.evaluation.last
            ours, corrected = last["ours"], last["corrected"]
            self.same_calls.add(
                [s for s, c in zip(ours, corrected, strict=True) if c.source != "none"]
            )
            k = learned_before[run.agent_id]
            learned_before[run.agent_id] = k + 1
            if k >= CHANGE_RUN and run.agent_id in focus:
                self.after_change["adaptive"].add(ours)
                self.after_change["corrected"].add(corrected)
            _curve(self.curves["adaptive"]["ours"][k], ours)
            _curve(self.curves["corrected"]["ours"][k], corrected)

    def rows(self) -> list[tuple[str, dict[str, Any]]]:
        report = self.evaluation.summary()
        calls = report["calls"]
        corrected = report["baselines"]["corrected"]
        baseline = report["baselines"]["agent_default"]
        same = self.same_calls.summary()
        return [
            (
                "corrected",
                {
                    **corrected,
                    "served": corrected["scored"] / calls,
                    "level_flips_per_100_runs": self.corrected_flips,
                },
            ),
            ("adaptive", report),
            ("adaptive, corrected's calls", {**same, "served": same["scored"] / calls}),
            ("agent_default", {**baseline, "served": baseline["scored"] / calls}),
            *([("known distributions (bound)", self.known)] if self.known else []),
        ]


def known_distributions(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The bound no learner can pass: every call predicted from the distribution its output
    tokens were drawn from (its median and p90 known exactly, from the first run after a
    change on), scored as SPEC 10 scores a prediction, on the calls after each agent's first
    run (those corrected serves). A calibrated p90 covers 0.9 of them, and the median is the
    prediction with the least expected absolute error."""
    first_seen: set[str] = set()
    medians: list[float] = []
    covered = 0
    tokens: list[float] = []
    calls = 0
    for run in runs:  # in time order: an agent's first run is its first here
        llm = [call for call in run["calls"] if call["kind"] == "llm"]
        calls += len(llm)
        if run["agent_id"] not in first_seen:
            first_seen.add(run["agent_id"])
            continue
        for call in llm:
            median, y = call[TRUE_MEDIAN], call["output_tokens"]
            medians.append(median)
            tokens.append(y)
            covered += y <= round(median * math.exp(Z90 * SPREAD))
    return {
        "served": len(tokens) / calls,
        "osl_coverage": covered / len(tokens),
        "osl_mae": sum(abs(m - y) for m, y in zip(medians, tokens, strict=True)) / len(tokens),
        "osl_tau": tau_b(medians, tokens),
    }


def _curve(totals: dict[int, list[float]] | list[float], scores: list[CallScore]) -> None:
    for score in scores:
        if score.source != "none":
            totals[0] += score.covered  # type: ignore[index]
            totals[1] += score.osl_error  # type: ignore[index]
            totals[2] += 1  # type: ignore[index]


def _flips(runs: list[Run], config: LearnerConfig) -> float:
    """Level flips per 100 runs learning `runs` under `config` alone."""
    evaluation = Evaluation(config)
    for run in runs:
        evaluation.learn(run)
    return evaluation.summary()["level_flips_per_100_runs"]


def changed_agents(runs: list[Run]) -> set[str]:
    """A drift scenario's agents whose call names change at their run CHANGE_RUN."""
    names: dict[str, list[set[str]]] = defaultdict(lambda: [set(), set()])
    count: dict[str, int] = defaultdict(int)
    for run in runs:
        k = count[run.agent_id]
        count[run.agent_id] = k + 1
        names[run.agent_id][k >= CHANGE_RUN].update(c.name for c in run.calls if c.kind == "llm")
    return {agent for agent, (before, after) in names.items() if after - before}


def oracle_drift(runs: list[Run], changed: set[str]) -> dict[str, Any]:
    """Adaptive without decay, but each `changed` agent (`changed_agents`) forgets
    everything before its run CHANGE_RUN as soon as that run is learned: no rule that must
    first see the change can forget sooner."""
    count: dict[str, int] = defaultdict(int)
    config = ADAPTIVE.model_copy(update={"adaptive": AdaptiveSettings(shift_calls=0)})
    evaluation = Evaluation(config)
    for run in runs:
        learned = evaluation.learn(run)
        k = count[run.agent_id]
        count[run.agent_id] = k + 1
        if learned is not None and k == CHANGE_RUN and run.agent_id in changed:
            state = evaluation.fleet.states[run.agent_id]
            state.forget()
            state.extras().models = {}
            state.fold(learned.observations, 0, None, config, learned.models)
    return evaluation.summary()


def table(scenarios: list[Scenario], oracles: dict[str, dict[str, Any]]) -> str:
    lines = []
    width = 30
    header = f"{'scenario / rules':<{width}}" + "".join(f"{t:>16}" for t in TITLES)
    lines.append(header)
    for scenario in scenarios:
        calls = scenario.evaluation.summary()["calls"]
        lines.append(f"{scenario.name} ({scenario.evaluation.runs:,} runs, {calls:,} LLM calls)")
        for label, numbers in scenario.rows():
            cells = "".join(f"{_cell(key, numbers.get(key)):>16}" for key in COLUMNS)
            lines.append(f"  {label:<{width - 2}}{cells}")
        oracle = oracles.get(scenario.name)
        if oracle is not None:
            cells = "".join(f"{_cell(key, oracle.get(key)):>16}" for key in COLUMNS)
            lines.append(f"  {'oracle (bound, see doc)':<{width - 2}}{cells}")
        for rule, tally in scenario.after_change.items():
            if tally.calls:
                numbers = tally.summary()
                cells = "".join(f"{_cell(key, numbers.get(key)):>16}" for key in COLUMNS[1:])
                label = f"{rule}, changed agents after"
                lines.append(f"  {label:<{width - 2}}{'-':>16}{cells}")
    return "\n".join(lines)


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return (
        f"{value:,.1f}"
        if key == "osl_mae"
        else f"{value:.3f}"
        if key != "level_flips_per_100_runs"
        else f"{value:.2f}"
    )


def targets(scenarios: dict[str, Scenario]) -> list[str]:
    """Issue 24's targets, each with the numbers it is judged on."""

    def rows(name: str) -> dict[str, dict[str, Any]]:
        return dict(scenarios[name].rows())

    out = []
    s = rows("stationary")
    ours, same, cor, base = (
        s["adaptive"],
        s["adaptive, corrected's calls"],
        s["corrected"],
        s["agent_default"],
    )
    out.append(
        _target(
            "stationary: coverage within 0.01 of corrected or better",
            ours["osl_coverage"] >= cor["osl_coverage"] - 0.01,
            f"{ours['osl_coverage']:.3f} vs {cor['osl_coverage']:.3f}",
        )
    )
    for key, better in (("osl_mae", min), ("osl_tau", max)):
        bound = better(cor[key], base[key])
        for label, numbers in (("all calls", ours), ("corrected's calls", same)):
            ok = numbers[key] <= bound if better is min else numbers[key] >= bound
            out.append(
                _target(
                    f"stationary: {key} no worse than corrected and agent_default ({label})",
                    ok,
                    f"{numbers[key]:.4f} vs corrected {cor[key]:.4f}, "
                    f"agent_default {base[key]:.4f}",
                )
            )
    for name in DRIFTS:
        out += drift_targets(name, scenarios[name])
    c = rows("cold_start")["adaptive"]
    out.append(
        _target(
            "cold start: served >= 0.95 with coverage >= 0.8",
            c["served"] >= 0.95 and c["osl_coverage"] >= 0.8,
            f"served {c['served']:.3f}, coverage {c['osl_coverage']:.3f}",
        )
    )
    b = rows("boundary")
    flips, base_flips = (
        b["adaptive"]["level_flips_per_100_runs"],
        b["corrected"]["level_flips_per_100_runs"],
    )
    out.append(
        _target(
            "boundary: flips at most half of corrected's",
            flips <= base_flips / 2,
            f"{flips:.2f} vs {base_flips:.2f}",
        )
    )
    return out


def drift_targets(name: str, scenario: Scenario) -> list[str]:
    """The drift targets on one drift scenario, then what the changed agents got after
    their change and what the known distributions give."""
    d = dict(scenario.rows())
    ours, cor = d["adaptive"], d["corrected"]
    cut = 1 - ours["osl_mae"] / cor["osl_mae"]
    out = [
        _target(
            f"{name}: coverage >= corrected + 0.10",
            ours["osl_coverage"] >= cor["osl_coverage"] + 0.10,
            f"{ours['osl_coverage']:.3f} vs {cor['osl_coverage']:.3f} + 0.10",
        ),
        _target(
            f"{name}: osl MAE >= 25% lower",
            cut >= 0.25,
            f"{cut:.1%} lower ({ours['osl_mae']:.1f} vs {cor['osl_mae']:.1f})",
        ),
    ]
    after = {rule: t.summary() for rule, t in scenario.after_change.items()}
    if after["corrected"]["scored"]:
        mine, theirs = after["adaptive"], after["corrected"]
        out.append(
            f"  (info)   {name}, the changed agents after their change: coverage "
            f"{mine['osl_coverage']:.3f} vs {theirs['osl_coverage']:.3f}, osl MAE "
            f"{1 - mine['osl_mae'] / theirs['osl_mae']:.1%} lower "
            f"({mine['osl_mae']:.1f} vs {theirs['osl_mae']:.1f})"
        )
    known = scenario.known
    if known:
        out.append(
            f"  (info)   {name}, each call's own distribution known (the bound): coverage "
            f"{known['osl_coverage']:.3f} (corrected + "
            f"{known['osl_coverage'] - cor['osl_coverage']:.3f}), osl MAE "
            f"{1 - known['osl_mae'] / cor['osl_mae']:.1%} lower ({known['osl_mae']:.1f})"
        )
    return out


def _target(what: str, met: bool, numbers: str) -> str:
    return f"  {'met    ' if met else 'NOT met'}  {what}: {numbers}"


def plot(scenarios: list[Scenario], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(scenarios), 2, figsize=(11, 3.4 * len(scenarios)), squeeze=False)
    colors = {"adaptive": "tab:blue", "corrected": "tab:orange"}
    for row, scenario in enumerate(scenarios):
        cov_ax, mae_ax = axes[row]
        width = 5 if scenario.name != "cold_start" else 1
        for rule in ("adaptive", "corrected"):  # corrected on top: visible where equal
            points = _binned(scenario.curves[rule]["ours"], width)
            xs = [x for x, _, _ in points]
            style: dict[str, Any] = {"color": colors[rule], "label": rule}
            style.update(linewidth=3) if rule == "adaptive" else style.update(linestyle="--")
            cov_ax.plot(xs, [c for _, c, _ in points], **style)
            mae_ax.plot(xs, [m for _, _, m in points], **style)
        cov_ax.axhline(0.9, color="black", linewidth=0.6, linestyle=":")
        if scenario.name in DRIFTS:
            for ax in (cov_ax, mae_ax):
                ax.axvline(CHANGE_RUN, color="gray", linewidth=0.8, linestyle="--")
        cov_ax.set_ylim(0, 1.02)
        cov_ax.set_title(f"{scenario.name}: osl coverage", fontsize=10)
        mae_ax.set_title(f"{scenario.name}: osl MAE (tokens)", fontsize=10)
        for ax in (cov_ax, mae_ax):
            ax.set_xlabel(f"runs the agent had learned before ({width} per point)")
            ax.grid(alpha=0.3)
        cov_ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.adaptive", description=__doc__)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "adaptive.png")
    args = parser.parse_args(argv)
    scenarios = {}
    oracles = {}
    for name, make in SCENARIOS.items():
        raw = make(args.seed)
        runs = [parse_run(orjson.dumps(r)) for r in raw]
        focus = changed_agents(runs) if name in DRIFTS else set()
        scenarios[name] = Scenario(name, runs, focus, known_distributions(raw))
        if name in DRIFTS:
            oracles[name] = oracle_drift(runs, focus)
    print(
        f"adaptive against corrected, scenarios of seed {args.seed} (SPEC 10, replay --evaluate)\n"
    )
    print(table(list(scenarios.values()), oracles))
    print("\nissue 24 targets:")
    print("\n".join(targets(scenarios)))
    plot(list(scenarios.values()), args.out)
    print(f"\nplot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
