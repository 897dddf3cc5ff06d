"""Every dashboard query and every alert expression against a real Prometheus that scraped a real screener.

Grafana cannot run here, so this is how we know the panels show something: the screener processes a stream with
sanctions hits, unscreenable and malformed records and one short watchlist outage; Prometheus (Debian package,
free loopback port, 1 s scrapes, alerts.yml loaded) scrapes it; then each panel target is sent the way Grafana's
Prometheus data source sends it (range query over the run, or instant query at its end, built-in and template
variables expanded) and must return at least one finite value. Each alert expression must run and its condition,
read as a 0/1 signal, must return data (every alert watches series that exist); every rule must be evaluated by
Prometheus without error, and the sanctions-hit alert must fire.
"""

from __future__ import annotations

import math
import re
import time

import pytest

from aml_screener.devstack.generator import Expected
from tests.observability.prom import (
    DASHBOARDS,
    PrometheusError,
    alert_rules,
    finite_values,
    grafana_rate_interval,
    load_rules,
    panel_queries,
    substitute,
)
from tests.observability.scenario import observed_screener, run_traffic

pytestmark = pytest.mark.integration

STEP = 1.0  # range-query step = Grafana's $__interval for a short range on a wide panel
TEMPLATE_VARIABLES = {"instance": ".*"}  # the "All" value of the operations dashboard's instance variable


def test_every_dashboard_query_and_alert_expression_returns_data() -> None:
    with observed_screener() as run:
        run_traffic(run)
        run.wait_all_handled()
        # The outage really happened: the fail-closed panels and alerts have real series behind them.
        pauses = [
            line
            for line in run.screener.metrics().splitlines()
            if line.startswith("aml_screener_fail_closed_pauses_total{")
        ]
        assert pauses, "the Redis pause made the screener fail closed"
        hits = run.expected(Expected.FLAGGED)
        assert hits > 50 and run.expected(Expected.DEAD_LETTER) > 0 and run.expected(Expected.UNSCREENABLE) > 0
        assert run.screener.metric("aml_screener_decisions_total", decision="flagged") == hits
        assert run.screener.metric("aml_screener_actions_total", direction="deposit", action="freeze") > 0, "deposits"
        run.list_past_destination()
        run.wait_scraped()

        end = time.time()
        start = run.started_at
        range_s = math.ceil(end - start)
        rate_interval = grafana_rate_interval(STEP, run.prometheus.scrape_interval)
        empty: list[str] = []
        evaluated = 0
        for name in DASHBOARDS:
            for query in panel_queries(name):
                expr = substitute(
                    query.expr,
                    interval_s=STEP,
                    rate_interval_s=rate_interval,
                    range_s=range_s,
                    variables=TEMPLATE_VARIABLES,
                )
                try:
                    if query.instant:
                        result = run.prometheus.query(expr, at=end)
                    else:
                        result = run.prometheus.query_range(expr, start, end, STEP)
                except PrometheusError as exc:
                    empty.append(f"{query}: {exc}")
                    continue
                evaluated += 1
                if not finite_values(result):
                    empty.append(f"{query}: no finite value for {expr}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
        assert evaluated == sum(len(panel_queries(name)) for name in DASHBOARDS) > 60

        # Every alert expression parses and runs; the stream had sanctions hits, so that one returns data.
        results = {}
        for rule in alert_rules():
            results[rule["alert"]] = run.prometheus.query(rule["expr"], at=end)
        # Beyond running: every alert is backed by live series. Its condition turned into a 0/1 signal (each
        # comparison made a `bool` comparison, `absent(x)` read as `x`) must return data, so no alert watches a
        # metric name or label the screener does not export.
        silent = [
            rule["alert"]
            for rule in alert_rules()
            if not finite_values(run.prometheus.query(as_signal(rule["expr"]), at=end))
        ]
        assert not silent, f"alerts whose inputs have no data: {silent}"
        sanctions = results["AmlSanctionsHit"]
        assert sanctions, "AmlSanctionsHit returns the hits"
        assert {series["metric"]["list"] for series in sanctions} == {"ofac-sdn"}
        assert sum(float(series["value"][1]) for series in sanctions) >= 1

        # Prometheus itself evaluated every rule without error, and the sanctions page went out.
        deadline = time.monotonic() + 10
        while True:
            rules = run.prometheus.rules()
            firing = {rule["name"] for rule in rules if rule.get("state") == "firing"}
            if "AmlSanctionsHit" in firing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
        assert not broken, broken
        assert len(rules) == len(load_rules()), "every rule of alerts.yml is loaded"
        assert "AmlSanctionsHit" in firing
        # A healthy screener with every event decided: the availability pages stay quiet.
        assert not firing & {"AmlScreenerAbsent", "AmlScreenerNotReady", "AmlScreenerFailOpen", "AmlWatchlistEmpty"}


_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def as_signal(expr: str) -> str:
    """The alert condition as a 0/1 series over the series it reads: `a > 5` -> `a > bool 5`, `absent(x)` -> `(x)`,
    `offset 10m` dropped (a test Prometheus has seconds of history), a trailing `unless ...` dropped (with `bool`
    its right side always matches). Label matchers, inside braces, are left alone."""
    expr = _drop_top_level_unless(expr.replace("absent(", "("))
    expr = re.sub(r"\s+offset\s+\d+[smhdw]", "", expr)
    out: list[str] = []
    depth, i = 0, 0
    while i < len(expr):
        char = expr[i]
        depth += (char == "{") - (char == "}")
        op = next((c for c in _COMPARISONS if depth == 0 and expr.startswith(c, i)), None)
        if op is None:
            out.append(char)
            i += 1
            continue
        out.append(op + " bool")
        i += len(op)
        if expr[i:].lstrip().startswith("bool"):
            i = expr.index("bool", i) + len("bool")
    return "".join(out)


def _drop_top_level_unless(expr: str) -> str:
    depth = 0
    for match in re.finditer(r"[()]|\sunless\s", expr):
        token = match.group()
        if token in "()":
            depth += 1 if token == "(" else -1
        elif depth == 0:
            return expr[: match.start()]
    return expr


def test_alert_conditions_become_signals() -> None:
    assert as_signal('absent(up{job="a"} == 1)') == '(up{job="a"} == bool 1)'
    assert as_signal('x{a!="b"} >= 0.5 and y < bool 2') == 'x{a!="b"} >= bool 0.5 and y < bool 2'
    assert as_signal("rate(x[6h] offset 10m) > 1\nunless z == 1") == "rate(x[6h]) > bool 1"
    assert as_signal("(a unless b offset 5m) > 0") == "(a unless b) > bool 0", "a nested unless stays"
