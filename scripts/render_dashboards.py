#!/usr/bin/env python3
"""Render the Grafana dashboards' panels to PNG from a Prometheus, for the docs and for reviewers (Grafana itself
cannot run here).

Each dashboard becomes one PNG laid out like the dashboard (its gridPos): time series as line charts, stat panels
as big numbers, tables as tables. Queries are sent the way Grafana's Prometheus data source sends them (range
queries with $__interval / $__rate_interval for the chosen range, instant queries at its end, template variables
set to "All").

    python scripts/render_dashboards.py http://prometheus:9090 --range 6h      # any Prometheus scraping screeners
    python scripts/render_dashboards.py --demo                                 # start everything, run, render

--demo starts the embedded stack (mock Kafka + redis-server, bundled OFAC sample), a real screener, a real
Prometheus (Debian package) scraping it every second with the alert rules, produces a few minutes of seeded
withdrawals (sanctions hits, unscreenable and malformed records, one short Redis outage), then renders into
docs/images/.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the shared helpers live in tests/observability (also used by the tests)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402
from tests.observability.prom import (  # noqa: E402
    DASHBOARDS,
    PrometheusClient,
    finite_values,
    grafana_rate_interval,
    load_dashboard,
    substitute,
)
from tests.observability.scenario import observed_screener, run_traffic  # noqa: E402

VARIABLES = {"instance": ".*"}
UNIT_ROW = 0.42  # inches per Grafana grid row (30 px)
UNIT_COL = 0.9  # inches per Grafana grid column
PALETTE = [  # Grafana's classic series colours
    "#7eb26d",
    "#eab839",
    "#6ed0e0",
    "#ef843c",
    "#e24d42",
    "#1f78c1",
    "#ba43a9",
    "#705da0",
    "#508642",
    "#cca300",
    "#447ebc",
    "#c15c17",
    "#890f02",
    "#0a437c",
    "#6d1f62",
    "#584477",
]
BACKGROUND = "#181b1f"
PANEL = "#22252b"
TEXT = "#d8d9da"
MUTED = "#8e8e8e"


class Query:
    """Runs panel targets against one Prometheus over one time range, like Grafana would."""

    def __init__(self, server: PrometheusClient, start: float, end: float, scrape_interval: float) -> None:
        self.server = server
        self.start = start
        self.end = end
        # Grafana picks $__interval from range / max data points; about 300 points per panel here.
        self.step = max(scrape_interval, math.ceil((end - start) / 300))
        self.rate_interval = grafana_rate_interval(self.step, scrape_interval)

    def expr(self, raw: str) -> str:
        return substitute(
            raw,
            interval_s=self.step,
            rate_interval_s=self.rate_interval,
            range_s=math.ceil(self.end - self.start),
            variables=VARIABLES,
        )

    def run(self, target: Mapping[str, Any]) -> list[dict[str, Any]]:
        expr = self.expr(target["expr"])
        if target.get("instant"):
            return self.server.query(expr, at=self.end)
        return self.server.query_range(expr, self.start, self.end, self.step)


def legend(template: str, labels: Mapping[str, str]) -> str:
    if not template or template == "__auto":
        shown = {k: v for k, v in labels.items() if k != "__name__"}
        return ", ".join(f"{k}={v}" for k, v in shown.items()) or "value"
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)
    return text.strip() or "value"


# Per unit: (threshold, divisor, suffix) from the largest down; the first whose threshold |value| reaches applies.
_SCALES: dict[str, list[tuple[float, float, str]]] = {
    "s": [(86400, 86400, " d"), (3600, 3600, " h"), (1, 1, " s"), (1e-12, 1e-3, " ms")],
    "bytes": [(0, 2**20, " MiB")],
    "currencyUSD": [(1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e3, 1e3, "k"), (0, 1, "")],
    "reqps": [(0, 1, "/s")],
    "percentunit": [(0, 0.01, " %")],
    "short": [(1e6, 1e6, "M"), (1e4, 1e3, "k"), (0, 1, "")],
}


def formatter(unit: str) -> Callable[[float], str]:
    if unit == "dateTimeAsIso":  # milliseconds since the epoch, shown in the dashboards' time zone (UTC)
        return lambda value: datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    scales = _SCALES.get(unit, _SCALES["short"])
    prefix = "$" if unit == "currencyUSD" else ""

    def fmt(value: float) -> str:
        if value == 0:
            return "0"
        for threshold, divisor, suffix in scales:
            if abs(value) >= threshold:
                return f"{prefix}{value / divisor:.4g}{suffix}"
        return f"{value:.4g}"

    return fmt


def style(ax: Axes, title: str) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color("#33363c")
    ax.tick_params(colors=MUTED, labelsize=7)
    ax.set_title(title, color=TEXT, fontsize=9, loc="left", pad=4)


def draw_timeseries(ax: Axes, panel: Mapping[str, Any], query: Query) -> None:
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    color = 0
    for target in panel["targets"]:
        for series in query.run(target):
            points = [(float(t), float(v)) for t, v in series["values"]]
            points = [(t, v) for t, v in points if math.isfinite(v)]
            if not points:
                continue
            times = [t for t, _ in points]
            ax.plot(
                times,
                [v for _, v in points],
                linewidth=1.1,
                color=PALETTE[color % len(PALETTE)],
                label=legend(target.get("legendFormat", ""), series["metric"]),
            )
            color += 1
    if panel["fieldConfig"]["defaults"].get("min") == 0:
        ax.set_ylim(bottom=0)
    low, high = ax.get_ylim()
    for step in panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])[1:]:
        if low <= step["value"] <= high * 1.5:  # a far-away threshold would flatten the data
            ax.axhline(step["value"], color="#e24d42", linestyle="--", linewidth=0.8)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: formatter(unit)(v)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _pos: f"{datetime.fromtimestamp(t, UTC):%H:%M:%S}"))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.grid(color="#33363c", linewidth=0.5)
    if color:
        ax.legend(
            fontsize=6,
            loc="upper left",
            framealpha=0.4,
            facecolor=PANEL,
            labelcolor=TEXT,
            ncol=2 if color > 4 else 1,
            borderaxespad=0.2,
        )
    else:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)


def draw_stat(ax: Axes, panel: Mapping[str, Any], query: Query) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    fmt = formatter(defaults.get("unit", "short"))
    steps = defaults.get("thresholds", {}).get("steps", [{"color": "green", "value": None}])
    text_mode = panel["options"].get("textMode", "value")
    items: list[tuple[str, float]] = []
    for target in panel["targets"]:
        for series in query.run(target):
            values = finite_values([series])
            if values:
                items.append((legend(target.get("legendFormat", ""), series["metric"]), values[-1]))
    ax.set_xticks([])
    ax.set_yticks([])
    if not items:
        ax.text(0.5, 0.45, "No data", color=MUTED, ha="center", va="center", fontsize=14, transform=ax.transAxes)
        return
    for index, (name, value) in enumerate(items[:3]):
        color = "#73bf69"
        for step in steps:
            if step["value"] is None or value >= step["value"]:
                color = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830"}.get(step["color"], step["color"])
        y = 0.45 - index * 0.3 if len(items) > 1 else 0.42
        if text_mode == "name":
            ax.text(0.5, y, name, color=TEXT, ha="center", va="center", fontsize=11, transform=ax.transAxes)
        else:
            decimals = defaults.get("decimals")
            shown = (
                f"{value * 100:.{decimals}f} %"
                if decimals is not None and defaults.get("unit") == "percentunit"
                else fmt(value)
            )
            if text_mode == "value_and_name":
                shown = f"{name}: {shown}"
            ax.text(
                0.5,
                y,
                shown,
                color=color,
                ha="center",
                va="center",
                fontsize=14 if text_mode == "value_and_name" else 20,
                fontweight="bold",
                transform=ax.transAxes,
            )


def draw_table(ax: Axes, panel: Mapping[str, Any], query: Query) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    renames: dict[str, str] = {}
    for transformation in panel.get("transformations", []):
        renames.update(transformation.get("options", {}).get("renameByName", {}))
    multi = len(panel["targets"]) > 1
    rows: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    value_columns: list[str] = []
    for target in panel["targets"]:
        column = renames.get(f"Value #{target['refId']}" if multi else "Value", "Value")
        value_columns.append(column)
        unit = next(
            (
                prop["value"]
                for o in panel["fieldConfig"].get("overrides", [])
                if o["matcher"]["options"] == column
                for prop in o["properties"]
                if prop["id"] == "unit"
            ),
            "short",
        )
        for series in query.run(target):
            key = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
            rows.setdefault(key, {})[column] = formatter(unit)(float(series["value"][1]))
    if not rows:
        ax.text(0.5, 0.5, "No data", color=MUTED, ha="center", va="center", transform=ax.transAxes)
        return
    label_columns = sorted({k for key in rows for k, _ in key})
    header = label_columns + value_columns
    cells = [
        [dict(key).get(c, "") for c in label_columns] + [values.get(c, "") for c in value_columns]
        for key, values in sorted(rows.items())
    ][:12]
    table = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for (row, _col), cell in table.get_celld().items():
        cell.set_edgecolor("#33363c")
        cell.set_facecolor("#2c3038" if row == 0 else PANEL)
        cell.get_text().set_color(TEXT)


DRAW = {"timeseries": draw_timeseries, "stat": draw_stat, "table": draw_table}


def render(name: str, query: Query, out: Path) -> Path:
    board = load_dashboard(name)
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    width, height = 24 * UNIT_COL, bottom * UNIT_ROW + 0.8
    figure = plt.figure(figsize=(width, height), facecolor=BACKGROUND)
    start, end = datetime.fromtimestamp(query.start, UTC), datetime.fromtimestamp(query.end, UTC)
    span = f"{start:%Y-%m-%d %H:%M:%S} - {end:%H:%M:%S} UTC"
    figure.text(
        0.005,
        1 - 0.25 / height,
        f"{board['title']}   ({span}, rendered from Prometheus by scripts/render_dashboards.py)",
        color=TEXT,
        fontsize=13,
        va="top",
    )
    top = 0.8 / height
    for panel in board["panels"]:
        pos = panel["gridPos"]
        left, right = pos["x"] / 24, (pos["x"] + pos["w"]) / 24
        y0 = 1 - top - (pos["y"] + pos["h"]) * UNIT_ROW / height
        h = pos["h"] * UNIT_ROW / height
        if panel["type"] == "row":
            figure.text(
                left + 0.004, y0 + h / 2, panel["title"], color=TEXT, fontsize=11, fontweight="bold", va="center"
            )
            continue
        # Room inside the panel for the title above and the tick labels left of and below the plot.
        pad_left = (0.6 if panel["type"] == "timeseries" else 0.1) / width
        pad_right, pad_top, pad_bottom = 0.12 / width, 0.3 / height, 0.3 / height
        ax = figure.add_axes(
            (left + pad_left, y0 + pad_bottom, right - left - pad_left - pad_right, h - pad_top - pad_bottom)
        )
        style(ax, panel["title"])
        DRAW[panel["type"]](ax, panel, query)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    figure.savefig(path, dpi=80, facecolor=BACKGROUND)
    plt.close(figure)
    return path


def demo(out: Path, seconds: float) -> list[Path]:
    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    say("starting embedded stack, screener and Prometheus")
    with observed_screener() as run:
        waves = max(6, round(seconds / 2))
        say(f"producing {waves} waves of 400 withdrawals, 2 s apart (one Redis outage a third of the way in)")
        run_traffic(
            run,
            waves=waves,
            per_wave=400,
            pause=2.0,
            outage_at_wave=waves // 3,
            hit_share=0.03,
            progress=say if waves <= 12 else None,
        )
        run.wait_all_handled(timeout=120)
        say("listing a destination the stream already sent to (a retroactive match)")
        run.list_past_destination()
        run.wait_scraped()
        time.sleep(3)  # a few idle scrapes at the end, so the charts show traffic stopping
        query = Query(run.prometheus, run.started_at, time.time(), run.prometheus.scrape_interval)
        paths = [render(name, query, out) for name in DASHBOARDS]
        say(f"{len(run.produced)} events produced; rendered {', '.join(str(p) for p in paths)}")
        return paths


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 15m or 6h, got {text!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prometheus", nargs="?", help="Prometheus base URL, e.g. http://localhost:9090")
    parser.add_argument("--range", type=parse_duration, default=parse_duration("1h"), help="time range (default 1h)")
    parser.add_argument(
        "--scrape-interval",
        type=parse_duration,
        default=parse_duration("15s"),
        help="scrape interval of the data source, for $__rate_interval (default 15s)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="output directory")
    parser.add_argument("--demo", action="store_true", help="start stack + screener + Prometheus, run load, render")
    parser.add_argument("--demo-seconds", type=float, default=150, help="length of the demo load (default 150)")
    args = parser.parse_args(argv)
    if args.demo:
        demo(args.out, args.demo_seconds)
        return 0
    if not args.prometheus:
        parser.error("give a Prometheus URL or --demo")
    end = time.time()
    query = Query(PrometheusClient(args.prometheus), end - args.range, end, args.scrape_interval)
    for name in DASHBOARDS:
        print(render(name, query, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
