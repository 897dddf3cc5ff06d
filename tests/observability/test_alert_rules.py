"""The alert rules: valid for Prometheus, unit-tested with promtool (every alert firing and not firing), every
alert routed (severity) and explained (summary, description, a runbook section that exists), and built only from
metrics the screener exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.prom import (
    ALERTS,
    RUNBOOK,
    alert_rules,
    exported_metric_names,
    load_rules,
    metric_names,
)

TESTS = sorted(Path(__file__).resolve().parent.glob("alerts_test*.yml"))
SEVERITIES = {"page", "warning"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: scripts/bootstrap.sh installs the Debian package prometheus")
    return path


def test_promtool_check_rules_accepts_the_rule_file() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", *map(str, TESTS)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS)


def _unit_test_cases() -> list[dict[str, Any]]:
    cases = []
    for path in TESTS:
        doc = yaml.safe_load(path.read_text())
        rule_files = [(path.parent / name).resolve() for name in doc["rule_files"]]
        assert rule_files == [ALERTS], f"{path.name} tests {rule_files}, not {ALERTS}"
        cases += [case for test in doc["tests"] for case in test.get("alert_rule_test", [])]
    return cases


def test_every_alert_has_a_firing_and_a_not_firing_unit_test() -> None:
    cases = _unit_test_cases()
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - firing == set(), "alerts without a test where they fire"
    assert alerts - quiet == set(), "alerts without a test where they stay quiet"
    assert (firing | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_every_alert_is_routed_and_explained() -> None:
    anchors = _runbook_anchors()
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        url = annotations["runbook_url"]
        assert url == f"docs/runbook.md#{name.lower()}", (name, url)
        assert name.lower() in anchors, f"docs/runbook.md has no section for {name}"
    sanctions = next(rule for rule in alert_rules() if rule["alert"] == "AmlSanctionsHit")
    assert sanctions["labels"]["severity"] == "page"
    assert "for" not in sanctions, "a sanctions hit pages at once"


def _runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings (lower case, spaces to dashes, punctuation dropped)."""
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_rules_use_only_metrics_the_screener_exports() -> None:
    exported = exported_metric_names()
    for rule in load_rules():
        unknown = metric_names(rule["expr"]) - exported
        assert not unknown, (rule.get("alert") or rule.get("record"), unknown)
