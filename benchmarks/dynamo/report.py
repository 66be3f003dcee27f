"""The benchmark's figures: per phase, then medians over repeats with ranges, and targets.

Results are plain JSON (`--results`), so the report and the plot can be made again from a
saved run (`--report-only`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from benchmarks.dynamo.programs import PROGRAMS, RunResult
from benchmarks.harness import percentile

#: (label, program or None for all runs, statistic)
COLUMNS = [
    ("mean, all runs", None, "mean"),
    *[(f"{p} p50", p, "p50") for p in PROGRAMS],
    *[(f"{p} p90", p, "p90") for p in PROGRAMS],
]
TARGET_MEAN_CUT = 0.30
TARGET_CHAT_P50_CUT = 0.50
TARGET_P90_WORSE = 0.10
TARGET_LOW_LOAD = 0.05
TARGET_ADDED_P50_MS = 1.0


def bucket_quantile(buckets: dict[float, float], q: float) -> float:
    """A quantile of a cumulative histogram, linear within its bucket (seconds)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return 0.0
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def run_json(run: RunResult) -> dict[str, Any]:
    return {
        "program": run.program,
        "makespan_s": round(run.makespan_s, 4),
        "complete": run.complete,
        "calls": [[c.name, c.status, round(c.ttft_s, 4), round(c.latency_s, 4)] for c in run.calls],
    }


def phase_figures(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Makespan p50/p90/mean per program and over all runs; TTFT p50/p90 over all calls."""
    out: dict[str, float] = {}
    by_program: dict[str | None, list[float]] = defaultdict(list)
    for run in runs:
        by_program[run["program"]].append(run["makespan_s"])
        by_program[None].append(run["makespan_s"])
    for program, values in by_program.items():
        key = program or "all"
        out[f"{key} p50"] = percentile(values, 50)
        out[f"{key} p90"] = percentile(values, 90)
        out[f"{key} mean"] = statistics.fmean(values)
    ttfts: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for name, status, ttft, _ in run["calls"]:
            if status == 200:
                ttfts[name].append(ttft)
                ttfts["all"].append(ttft)
    for name, values in ttfts.items():
        prefix = "ttft" if name == "all" else f"ttft {name}"
        out[f"{prefix} p50"] = percentile(values, 50)
        out[f"{prefix} p90"] = percentile(values, 90)
    out["runs"] = len(runs)
    out["incomplete"] = sum(not run["complete"] for run in runs)
    out["non-200 calls"] = sum(call[1] != 200 for run in runs for call in run["calls"])
    return out


def _key(program: str | None, stat: str) -> str:
    return f"{program or 'all'} {stat}"


def summarize(results: dict[str, Any]) -> dict[tuple[float, str], dict[str, list[float]]]:
    """(load, arm) -> figure name -> its value in each repeat."""
    table: dict[tuple[float, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for phase in results["phases"]:
        figures = phase_figures(phase["runs"])
        for name, value in figures.items():
            table[(phase["load"], phase["arm"])][name].append(value)
    return table


def _cell(values: list[float], base: list[float] | None) -> str:
    med = statistics.median(values)
    text = f"{med:.1f} ({min(values):.1f}-{max(values):.1f})"
    if base:
        text += f" {100 * (med / statistics.median(base) - 1):+.0f}%"
    return text


def markdown(results: dict[str, Any]) -> list[str]:
    """One table per load: makespan (s) medians over repeats (range) and change vs `off`."""
    table = summarize(results)
    lines = []
    for load in results["loads"]:
        base = table.get((load, "off"))
        lines += [
            "",
            f"load {load:g}x capacity ({results['capacity_runs_per_s']:.2f} runs/s)"
            f", makespan in s: median of {results['repeats']} repeats (range), vs off",
            "",
        ]
        header = ["arm", *(label for label, _, _ in COLUMNS), "TTFT p50 / p90", "runs"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for arm in results["arms"]:
            figures = table.get((load, arm))
            if not figures:
                continue
            cells = [arm]
            for _, program, stat in COLUMNS:
                key = _key(program, stat)
                cells.append(_cell(figures[key], base[key] if base and arm != "off" else None))
            ttft = statistics.median(figures["ttft p50"]), statistics.median(figures["ttft p90"])
            cells.append(f"{ttft[0]:.2f} / {ttft[1]:.2f}")
            runs = int(sum(figures["runs"]))
            bad = int(sum(figures["incomplete"]))
            cells.append(f"{runs - bad}/{runs}")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def ttft_markdown(results: dict[str, Any]) -> list[str]:
    """TTFT per call name (p50 / p90 s, medians over repeats), one column per arm."""
    table = summarize(results)
    names = [step.name for steps in PROGRAMS.values() for step in steps]
    lines = []
    for load in results["loads"]:
        arms = [arm for arm in results["arms"] if (load, arm) in table]
        lines += ["", f"load {load:g}x: time to first token per call, p50 / p90 in s", ""]
        lines += ["| call | " + " | ".join(arms) + " |", "|" + "---|" * (len(arms) + 1)]
        for name in names:
            cells = []
            for arm in arms:
                figures = table[(load, arm)]
                p50 = statistics.median(figures[f"ttft {name} p50"])
                p90 = statistics.median(figures[f"ttft {name} p90"])
                cells.append(f"{p50:.2f} / {p90:.2f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _change(table: Any, load: float, arm: str, key: str) -> float:
    return (
        statistics.median(table[(load, arm)][key]) / statistics.median(table[(load, "off")][key])
        - 1
    )


def verdicts(results: dict[str, Any], policy: str) -> list[str]:
    """Issue 22's targets for `policy` (the default) against `off`."""
    table = summarize(results)
    high, low = max(results["loads"]), min(results["loads"])
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"{'met    ' if ok else 'NOT met'}  {text}")

    if (high, policy) in table and (high, "off") in table:
        mean = _change(table, high, policy, "all mean")
        line(mean <= -TARGET_MEAN_CUT, f"{high:g}x mean makespan {mean:+.0%} (target <= -30%)")
        chat = _change(table, high, policy, "chat-assistant p50")
        line(chat <= -TARGET_CHAT_P50_CUT, f"{high:g}x chat-assistant p50 {chat:+.0%} (<= -50%)")
        for program in PROGRAMS:
            p90 = _change(table, high, policy, f"{program} p90")
            line(p90 <= TARGET_P90_WORSE, f"{high:g}x {program} p90 {p90:+.0%} (<= +10%)")
    if low < high and (low, policy) in table and (low, "off") in table:
        for key in ["all mean", *(f"{p} p50" for p in PROGRAMS)]:
            change = _change(table, low, policy, key)
            line(abs(change) <= TARGET_LOW_LOAD, f"{low:g}x {key} {change:+.1%} (within 5%)")
    runs = sum(len(p["runs"]) for p in results["phases"])
    bad = sum(not r["complete"] for p in results["phases"] for r in p["runs"])
    line(bad == 0, f"every run completed: {runs - bad}/{runs}")
    own = results.get("gateway_added_buckets")
    if own:
        buckets = {float(k): v for k, v in own.items()}
        p50 = bucket_quantile(buckets, 0.5) * 1000
        p99 = bucket_quantile(buckets, 0.99) * 1000
        line(
            p50 <= TARGET_ADDED_P50_MS,
            f"gateway added latency, its own time per request: p50 {p50:.2f} ms (<= 1 ms), "
            f"p99 {p99:.2f} ms, over the hinted phases' {int(max(buckets.values()))} requests",
        )
    added = results.get("added_latency")
    if added:
        p50 = added["p50_ms"]
        line(
            p50 <= TARGET_ADDED_P50_MS,
            f"gateway added latency, end to end (one more hop; {added['requests']} sequential "
            f"1-token requests through it vs straight to the frontend): p50 {p50:+.2f} ms, "
            f"p90 {added['p90_ms']:+.2f} ms",
        )
    return out


def learned(latest_hints: dict[str, Any], tries: dict[str, Any]) -> Iterable[str]:
    """What the worker learned, as the policies read it: per call name, mean output tokens
    and calls remaining at index 1."""
    for agent, record in sorted(latest_hints.items()):
        trie = tries.get(agent, {}).get("root", {})
        parts = []
        for name, node in sorted(trie.get("children", {}).items()):
            p = node["predictions_by_call_index"].get("1") or node["predictions_any_index"]
            parts.append(
                f"{name}: {p['output_tokens']['mean']:.0f} tok, "
                f"{p['remaining_calls']['mean']:.1f} left, level {p['latency_sensitivity']}"
            )
        yield f"  {agent} ({record['runs']} runs): " + "; ".join(parts)
