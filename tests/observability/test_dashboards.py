"""The Grafana dashboards: valid dashboard JSON by the schema generated from @grafana/schema
(scripts/grafana_schema/generate.sh), provisionable on any Grafana (data source chosen by a variable, fixed uids),
laid out without overlaps, and built only from metrics the screener exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.observability.prom import DASHBOARDS, exported_metric_names, load_dashboard, metric_names, panels

SCHEMA = json.loads((Path(__file__).resolve().parent / "grafana-dashboard.schema.json").read_text())
# Panel plugin -> definitions of its options and its fieldConfig.defaults.custom in the generated schema.
PANEL_TYPES = {
    "timeseries": ("TimeSeriesOptions", "TimeSeriesFieldConfig"),
    "stat": ("StatOptions", None),
    "table": ("TableOptions", "TableFieldConfig"),
}
UIDS = {"compliance": "aml-screener-compliance", "operations": "aml-screener-operations"}


def _errors(definition: str, instance: Any) -> list[str]:
    schema = {"$ref": f"#/definitions/{definition}", "definitions": SCHEMA["definitions"]}
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(instance)]


@pytest.fixture(params=sorted(DASHBOARDS))
def name(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def test_dashboard_matches_the_grafana_schema(name: str) -> None:
    board = load_dashboard(name)
    assert _errors("Dashboard", board) == []
    for panel in panels(board):
        options, custom = PANEL_TYPES[panel["type"]]
        assert _errors(options, panel.get("options", {})) == [], panel["title"]
        if custom is not None:
            assert _errors(custom, panel["fieldConfig"]["defaults"].get("custom", {})) == [], panel["title"]
        for target in panel["targets"]:
            assert _errors("PrometheusQuery", target) == [], (panel["title"], target["refId"])


def test_the_schema_rejects_what_grafana_would_not_load() -> None:
    """The generated schema is strict enough to be worth running."""
    board = load_dashboard("operations")
    assert _errors("Dashboard", {**board, "schemaVersion": "39"}), "schemaVersion must be a number"
    panel = next(panels(board))
    assert _errors("Panel", {k: v for k, v in panel.items() if k != "type"}), "a panel needs a type"
    assert _errors("Panel", {**panel, "gridpos": panel["gridPos"]}), "misspelt keys are rejected"
    assert _errors("StatOptions", {"colorMode": "purple"}), "option values are checked"


def test_dashboard_is_provisionable_on_any_grafana(name: str) -> None:
    board = load_dashboard(name)
    assert board["uid"] == UIDS[name], "fixed uid: links and provisioning updates keep pointing at it"
    assert board.get("id") is None
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], (panel["title"], target["refId"])
            assert target["expr"].strip(), panel["title"]
        assert panel.get("description"), f"{panel['title']}: every panel says what it shows"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_panels_do_not_overlap(name: str) -> None:
    occupied: dict[tuple[int, int], str] = {}
    for panel in load_dashboard(name)["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in occupied, f"{panel['title']} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = panel["title"]


def test_queries_use_only_metrics_the_screener_exports(name: str) -> None:
    exported = exported_metric_names()
    for panel in panels(load_dashboard(name)):
        for target in panel["targets"]:
            unknown = metric_names(target["expr"]) - exported
            assert not unknown, (panel["title"], unknown)


def test_compliance_dashboard_covers_what_compliance_asks_for() -> None:
    exprs = " ".join(target["expr"] for panel in panels(load_dashboard("compliance")) for target in panel["targets"])
    for label in ("list", "category", "asset", "chain"):
        assert f"sum by ({label}) (rate(aml_screener_flags_total" in exprs, label
    for metric in (
        'aml_screener_flags_total{category="sanctions"}',
        "aml_screener_flagged_usd_total",
        "aml_screener_events_consumed_total",
        "aml_screener_unscreenable_total",
        "aml_screener_dead_lettered_total",
        "aml_screener_held_total",
        "aml_screener_watchlist_info",
        "aml_screener_watchlist_source_addresses",
        "aml_screener_watchlist_source_last_success_timestamp_seconds",
        # OFAC reporting obligations: how many are open, due soon, overdue, and the nearest deadline.
        "max by (kind) (aml_screener_reporting_open_obligations)",
        "aml_screener_reporting_due_soon_obligations",
        "aml_screener_reporting_overdue_obligations",
        "min(aml_screener_reporting_next_due_timestamp_seconds)",
    ):
        assert metric in exprs, metric
