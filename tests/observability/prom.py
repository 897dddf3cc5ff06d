"""Shared by the observability tests and scripts/render_dashboards.py: where the dashboards and rules live, how to
read their queries the way Grafana would send them, the metric names the screener really exports, and a real
Prometheus server (Debian package `prometheus`) started on a free loopback port with a throw-away data directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.registry import CollectorRegistry

from aml_screener.api.metrics import ApiMetrics
from aml_screener.devstack.ports import free_port
from aml_screener.history.metrics import HistoryMetrics
from aml_screener.reporting.book import ObligationBook
from aml_screener.reporting.metrics import ReportingMetrics
from aml_screener.screener.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "helm" / "aml-screener" / "files"
DASHBOARDS = {name: FILES / "grafana" / f"{name}.json" for name in ("compliance", "operations")}
ALERTS = FILES / "prometheus" / "alerts.yml"
ALERTS_TEST = Path(__file__).resolve().parent / "alerts_test.yml"
RUNBOOK = REPO / "docs" / "runbook.md"

# Any PromQL identifier that names one of our series (recording rules use the `aml_screener:` prefix instead).
_METRIC_NAME = re.compile(r"\b((?:aml_screener|process)_[a-z0-9_]+)\b")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str
    instant: bool

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


def load_dashboard(name: str) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARDS[name].read_text())
    return board


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves are skipped."""
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(name: str) -> list[PanelQuery]:
    return [
        PanelQuery(name, panel["title"], target["refId"], target["expr"], bool(target.get("instant")))
        for panel in panels(load_dashboard(name))
        for target in panel.get("targets", [])
    ]


def grafana_rate_interval(step_seconds: float, scrape_interval_seconds: float) -> float:
    """Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval)."""
    return max(step_seconds + scrape_interval_seconds, 4 * scrape_interval_seconds)


def substitute(
    expr: str, *, interval_s: float, rate_interval_s: float, range_s: float, variables: Mapping[str, str]
) -> str:
    """Expand Grafana's built-in and template variables the way the Prometheus data source does."""

    def duration(seconds: float) -> str:
        return f"{max(1, round(seconds))}s"

    out = expr.replace("$__rate_interval", duration(rate_interval_s))
    out = out.replace("$__interval", duration(interval_s)).replace("$__range", duration(range_s))
    for name, value in variables.items():
        out = out.replace("${" + name + "}", value).replace("$" + name, value)
    leftover = re.search(r"\$\w+", out)
    if leftover:
        raise ValueError(f"unsubstituted variable {leftover.group()} in {expr!r}")
    return out


def load_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for rule in load_rules(path) if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    return set(_METRIC_NAME.findall(expr))


def exported_metric_names() -> set[str]:
    """Series names a screener, a reporter (`aml-screener report serve`), the pre-screen API (`aml-screener api`) or
    a history process can expose, from fresh metrics objects
    (labelled metrics without samples included: their names are derived from the family type, like the exposition
    format does)."""
    screener, reporter, api = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    Metrics(screener)
    ReportingMetrics(ObligationBook(), registry=reporter)
    ApiMetrics(api)
    history = HistoryMetrics().registry
    names: set[str] = set()
    for family in [*screener.collect(), *reporter.collect(), *api.collect(), *history.collect()]:
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum", f"{family.name}_created"}
        elif family.type == "info":
            names.add(f"{family.name}_info")
        else:
            names.add(family.name)
        names |= {sample.name for sample in family.samples}
    return names


class PrometheusError(RuntimeError):
    pass


class PrometheusClient:
    """The HTTP API calls the tests and the render script need, against any Prometheus."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        data = urllib.parse.urlencode(params).encode() if params else None
        try:
            with urllib.request.urlopen(url, data=data, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] in ("vector", "matrix") else [data]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}")
        result: list[dict[str, Any]] = data["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]


class PrometheusServer(PrometheusClient):
    """/usr/bin/prometheus on 127.0.0.1:<free port>, scraping `targets` every `scrape_interval` seconds and
    evaluating `rule_files` as often. Its data lives in a temporary directory removed by close()."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        rule_files: Sequence[Path] = (ALERTS,),
        scrape_interval: float = 1.0,
        job: str = "aml-screener",
        binary: str = "prometheus",
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise PrometheusError("prometheus is not installed (Debian: apt-get install prometheus)")
        self.binary = path
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.scrape_interval = scrape_interval
        self.directory = Path(tempfile.mkdtemp(prefix="aml-prometheus-"))
        interval = f"{round(scrape_interval * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        }
        self.config = self.directory / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = self.directory / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        # Not the Debian service (it would listen on :9090 with /etc/prometheus): our own process, own port, own data.
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/-/ready", timeout=1) as response:
                if response.status == 200:
                    return self
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def finite_values(result: Sequence[Mapping[str, Any]]) -> list[float]:
    """Every finite sample value of an instant (vector) or range (matrix) result."""
    values: list[float] = []
    for series in result:
        points = series.get("values") or ([series["value"]] if "value" in series else [])
        for _, raw in points:
            value = float(raw)
            if math.isfinite(value):
                values.append(value)
    return values
