"""The Grafana dashboard's queries as Prometheus would receive them.

Grafana replaces `$variable` / `${variable}` / `[[variable]]` and its built-ins before sending
a query; `substitute` does the same with given values and fails on any variable left over.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<match>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$"
)


@dataclass(frozen=True)
class Target:
    panel: str
    ref_id: str
    expr: str


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows; rows themselves excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def targets(dashboard: Mapping[str, Any]) -> list[Target]:
    return [
        Target(panel["title"], target.get("refId", "?"), target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard.get("templating", {}).get("list", []))


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query")
    return query.get("query", "") if isinstance(query, dict) else str(query or "")


def parse_label_values(query: str) -> tuple[str | None, str]:
    """`label_values(sel, label)` -> (sel, label); `label_values(label)` -> (None, label)."""
    found = _LABEL_VALUES.match(query)
    if found is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return found.group("match"), found.group("label")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace every dashboard variable and built-in; KeyError names one that has no value."""

    def replace(found: re.Match[str]) -> str:
        name = next(group for group in found.groups() if group)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)
