"""`replay --evaluate`'s table: SPEC 10's numbers for our hints and each baseline, one row
each, for a person to read (`--json` gives the same numbers to programs)."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("served", "served"),
    ("osl_coverage", "osl coverage"),
    ("osl_mae", "osl MAE"),
    ("osl_tau", "tau"),
    ("iat_mae_ms", "iat MAE ms"),
    ("remaining_mae", "remaining MAE"),
    ("level_flips_per_100_runs", "flips/100 runs"),
)
#: decimals per column
PLACES = {"osl_mae": 1, "iat_mae_ms": 1, "remaining_mae": 2, "level_flips_per_100_runs": 2}


def evaluation_table(summary: dict[str, Any]) -> bytes:
    """The summary of `Evaluation.summary()` as an aligned text table."""
    calls = summary["calls"]
    ours = "ours (trie, prior)" if "prior" in summary["sources"] else "ours (trie lookup)"
    rows = [(ours, summary)]
    for name, scores in summary["baselines"].items():
        served = scores["scored"] / calls if calls else None
        rows.append((name, {**scores, "served": served}))
    label_width = max(len(name) for name, _ in rows)
    widths = [max(len(title), 8) for _, title in COLUMNS]
    header = " " * label_width + "".join(
        f"  {title:>{w}}" for (_, title), w in zip(COLUMNS, widths, strict=True)
    )
    lines = [
        f"SPEC 10 accuracy ({summary['semantics']}): {summary['runs']:,} runs, {calls:,} LLM calls",
        "",
        header,
    ]
    for name, scores in rows:
        cells = "".join(
            f"  {_cell(key, scores.get(key)):>{w}}"
            for (key, _), w in zip(COLUMNS, widths, strict=True)
        )
        lines.append(f"{name:<{label_width}}{cells}")
    sources = summary["sources"]
    lines += [
        "",
        "sources: " + ", ".join(f"{name} {count:,}" for name, count in sources.items()),
        "served: share of calls with a prediction; coverage, MAE and tau over those calls "
        "(docs/accuracy.md)",
    ]
    return ("\n".join(lines) + "\n").encode()


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.{PLACES.get(key, 3)}f}"
