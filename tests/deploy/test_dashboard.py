"""The Grafana dashboard's structure: variables, panels the issue lists, every query filtered.

test_prometheus_live.py evaluates every query on a real Prometheus; this checks what a person
importing the JSON relies on.
"""

from __future__ import annotations

from devtools.deploy_tools import DASHBOARD
from tests.deploy.dashboard_queries import load, panels, substitute, targets, variables

#: what a team keeps open (issue 13): panel titles
EXPECTED_PANELS = {
    "Throughput: learned, duplicates, rejected",
    "Record processing time",
    "Run end -> hints published",
    "Consumer lag per partition",
    "Agents held per pod",
    "State bytes per pod",
    "Publish rate",
    "Errors and DLQ",
    "Readiness per pod",
}


def test_dashboard_has_a_datasource_and_pod_variable() -> None:
    dashboard = load(DASHBOARD)
    by_name = {v["name"]: v for v in variables(dashboard)}
    assert by_name["datasource"]["type"] == "datasource"
    assert by_name["datasource"]["query"] == "prometheus"
    instance = by_name["instance"]
    assert instance["includeAll"] and instance["multi"] and instance["allValue"] == ".*"
    assert dashboard["uid"] == "agent-hints-worker"


def test_dashboard_has_the_panels_a_team_keeps_open() -> None:
    titles = {panel["title"] for panel in panels(load(DASHBOARD))}
    assert titles >= EXPECTED_PANELS, EXPECTED_PANELS - titles


def test_every_panel_uses_the_datasource_variable_and_the_pod_filter() -> None:
    dashboard = load(DASHBOARD)
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["refId"])
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["refId"])


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load(DASHBOARD)["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_substitution_leaves_no_variable_and_names_a_missing_one() -> None:
    expr = targets(load(DASHBOARD))[0].expr
    values = {"job": "j", "instance": ".*", "__rate_interval": "1m"}
    assert "$" not in substitute(expr, values)
    try:
        substitute("rate(x[$__rate_interval])", {})
    except KeyError as exc:
        assert "__rate_interval" in str(exc)
    else:
        raise AssertionError("a missing variable was not reported")
