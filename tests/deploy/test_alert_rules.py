"""The alert rules: promtool checks them and runs their unit tests; each is documented.

alerts.test.yaml must show every alert both firing and staying quiet, and a rule file whose
thresholds are changed must fail those tests (they can fail).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from devtools.deploy_tools import ALERT_RULES, ALERT_TESTS, OPERATIONS_DOC, run_tool


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives headings: lower case, punctuation dropped, spaces to '-'."""
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_promtool_check_rules(prometheus_bin: Path) -> None:
    done = run_tool(prometheus_bin / "promtool", "check", "rules", ALERT_RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_test_rules(prometheus_bin: Path) -> None:
    done = run_tool(prometheus_bin / "promtool", "test", "rules", ALERT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rule_tests_fail_when_a_threshold_changes(prometheus_bin: Path, tmp_path: Path) -> None:
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    rules = ALERT_RULES.read_text()
    changed = rules.replace("> 1000", "> 5000").replace("> 0.9", "> 0.99")
    assert changed != rules
    (tmp_path / ALERT_RULES.name).write_text(changed)
    done = run_tool(prometheus_bin / "promtool", "test", "rules", tmp_path / ALERT_TESTS.name)
    assert done.returncode != 0
    assert "AgentHintsConsumerLagGrowing" in done.stdout + done.stderr
    assert "AgentHintsStateNearLimit" in done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for rule in alert_rules():
        assert cases.get(rule["alert"]) == {True, False}, (
            f"{rule['alert']}: {cases.get(rule['alert'])}"
        )


def test_every_alert_is_documented_with_a_runbook() -> None:
    doc = OPERATIONS_DOC.read_text()
    anchors = github_anchors(doc)
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        path, _, anchor = annotations["runbook"].partition("#")
        assert path == "docs/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, (
            f"{rule['alert']}: no heading for #{anchor} in docs/operations.md"
        )
