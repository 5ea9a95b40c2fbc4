"""report.html's "Dashboards" section: the repo's Grafana dashboards drawn from the run's own Prometheus answers
(prometheus/<uid>.json, kvtestbed.monitoring.capture), so a lab user without Grafana still sees every panel.

One collapsible block per dashboard, its rows as sub-headings; per panel a time plot (legend from the panel's
legendFormat, unit on the y axis, the run's warm-up and fault bands like every other time plot) or, for a stat
panel, a table of each series' last, min and max. A panel whose queries returned nothing says "no data" and why
(the query, or Prometheus's error), so an empty panel is never mistaken for a quiet one.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from kvtestbed.monitoring.capture import (
    CaptureError,
    load_captures,
    panel_has_data,
    panel_label,
    panel_name,
    series_has_data,
)
from kvtestbed.report.page import PLOT_CONFIG, Page, esc, fmt_number, table

# Grafana unit id -> (y axis title, d3 tick format, tick suffix); SI prefixes ("~s") read well for most: 5ms, 1.5MB
UNIT_AXES: dict[str, tuple[str, str, str]] = {
    "s": ("seconds", "~s", "s"),
    "ms": ("milliseconds", ",~g", " ms"),
    "µs": ("microseconds", ",~g", " µs"),
    "bytes": ("bytes", "~s", "B"),
    "decbytes": ("bytes", "~s", "B"),
    "Bps": ("bytes/s", "~s", "B/s"),
    "binBps": ("bytes/s", "~s", "B/s"),
    "pps": ("packets/s", "~s", ""),
    "ops": ("ops/s", "~s", ""),
    "reqps": ("requests/s", "~s", ""),
    "eps": ("events/s", "~s", ""),
    "cps": ("counts/s", "~s", ""),
    "percentunit": ("percent", ".1~%", ""),
    "percent": ("percent", ",~g", "%"),
    "celsius": ("°C", ",~g", "°C"),
    "short": ("", "~s", ""),
    "none": ("", ",~g", ""),
}
BYTE_UNITS = frozenset({"bytes", "decbytes", "Bps", "binBps"})
STAT_SUFFIX = {"s": "s", "ms": "ms", "µs": "µs", "ops": "ops/s", "reqps": "req/s", "eps": "events/s", "cps": "/s",
               "pps": "packets/s", "percent": "%", "celsius": "°C", "short": "", "none": ""}  # fmt: skip
STAT_TYPES = frozenset({"stat", "gauge", "bargauge", "table"})
PANEL_HEIGHT_PX = 300
STEP_TYPES = frozenset({"state-timeline", "status-history"})  # states hold until the next sample: steps, not slopes
_LEGEND_LABEL = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")

CSS = """
details.dashboard { border: 1px solid #ddd; border-radius: .3em; margin: .6em 0; padding: .2em .8em; }
details.dashboard > summary { cursor: pointer; font-weight: bold; padding: .3em 0; }
details.dashboard h3 { margin: 1em 0 .2em 0; font-size: 1em; color: #444; }
.nodata { border-left: 4px solid #9a6700; background: #fff8e5; padding: .3em .6em; margin: .4em 0; }
.nodata code { font-size: .85em; word-break: break-all; }
"""
# a plot drawn inside a closed <details> may be sized wrongly (a browser that lays out no hidden content): resized
# when its block opens ("toggle" does not bubble, so it is caught on the way down)
RESIZE_ON_OPEN = (
    "<script>document.addEventListener('toggle', e => { if (e.target.open && window.Plotly)"
    " e.target.querySelectorAll('.js-plotly-plot').forEach(d => Plotly.Plots.resize(d)); }, true);</script>"
)

Bands = Callable[[go.Figure], None]


def legend(fmt: str, metric: Mapping[str, Any], query: str) -> str:
    """A series' name as Grafana shows it: legendFormat with {{label}} filled (a label the series lacks is empty);
    with no legendFormat, the metric and its labels (the query for a series with neither)."""
    if fmt and fmt != "__auto":
        return _LEGEND_LABEL.sub(lambda m: str(metric.get(m.group(1), "")), fmt).strip() or fmt
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    name = str(metric.get("__name__", ""))
    return f"{name}{{{labels}}}" if labels else name or query


def _series_name(target: Mapping[str, Any], series: Mapping[str, Any]) -> str:
    return legend(str(target.get("legendFormat") or ""), series.get("metric") or {}, str(target.get("query", "")))


def _value(text: Any) -> float | None:
    """A sample as a number to plot: 6 significant digits (a plot shows no more; prometheus/*.json keeps them all,
    and a page of many panels halves), None for what cannot be drawn (NaN, infinities)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return float(f"{value:.6g}") if math.isfinite(value) else None


def format_value(value: float | None, unit: str) -> str:
    """A stat's value with its unit, readable in a table."""
    if value is None:
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.3g} %"
    if unit in BYTE_UNITS:
        scaled, prefix = float(value), ""
        for bigger in ("k", "M", "G", "T"):
            if abs(scaled) < 1000:
                break
            scaled, prefix = scaled / 1000, bigger
        return f"{fmt_number(scaled)} {prefix}B" + ("/s" if unit in ("Bps", "binBps") else "")
    return f"{fmt_number(value)} {STAT_SUFFIX.get(unit, unit)}".strip()


def panel_traces(panel: Mapping[str, Any], t0_unix: float) -> list[dict[str, Any]]:
    """Every series of every target as a plotly scatter trace (a plain dict) on the run's clock (s since t0); a
    value that is not a finite number (NaN from 0/0) is a gap."""
    step = panel.get("type") in STEP_TYPES
    traces = []
    for target in panel.get("targets") or []:
        for series in target.get("result") or []:
            if not series_has_data(series):
                continue
            points = series.get("values") or []
            trace: dict[str, Any] = {
                "type": "scatter",
                "mode": "lines",
                "name": _series_name(target, series),
                "x": [round(float(t) - t0_unix, 3) for t, _ in points],
                "y": [_value(v) for _, v in points],
                "connectgaps": False,
            }
            if step:
                trace["line"] = {"shape": "hv"}
            traces.append(trace)
    return traces


def base_layout(bands: Bands | None) -> dict[str, Any]:
    """What every panel's plot shares, built once: the page's template, size and margins, the run's bands."""
    fig = go.Figure()
    fig.update_layout(template="plotly_white", height=PANEL_HEIGHT_PX, margin={"l": 60, "r": 20, "t": 40, "b": 45},
                      showlegend=True)  # fmt: skip
    if bands is not None:
        bands(fig)
    return dict(fig.to_dict()["layout"])


def panel_figure(
    panel: Mapping[str, Any], t0_unix: float, x_range: Sequence[float], base: Mapping[str, Any]
) -> dict[str, Any]:
    """The panel's plot as plotly's figure dict: the shared layout with its title, the unit on the y axis and the
    capture's x range (its margins included), and every series. Plain dicts: plotly's figure objects validate and
    deep-copy every point and the template (10 s for 80 panels of 8 series x 360 points; this way, under 1 s)."""
    title, tickformat, suffix = UNIT_AXES.get(str(panel.get("unit") or ""), (str(panel.get("unit") or ""), "", ""))
    layout = {
        **base,
        "title": {"text": str(panel.get("title"))},
        "xaxis": {**(base.get("xaxis") or {}), "title": {"text": "s since start"}, "range": list(x_range)},
        "yaxis": {"title": {"text": title}, "tickformat": tickformat, "ticksuffix": suffix, "hoverformat": tickformat},
    }
    return {"data": panel_traces(panel, t0_unix), "layout": layout}


def figure_html(figure: Mapping[str, Any], div_id: str) -> str:
    """A plot div as Page.figure makes one (plotly.js is in the page's head once)."""
    div = pio.to_html(dict(figure), include_plotlyjs=False, full_html=False, div_id=div_id, config=PLOT_CONFIG,
                      default_height=f"{PANEL_HEIGHT_PX}px", validate=False)  # fmt: skip
    return f'<div class="plot">{div}</div>'


def stat_table(panel: Mapping[str, Any]) -> str:
    """One row per series: its last value (Grafana's stat default, lastNotNull), min and max over the window."""
    unit = str(panel.get("unit") or "")
    rows = []
    for target in panel.get("targets") or []:
        for series in target.get("result") or []:
            values = [v for v in (_value(p[1]) for p in series.get("values") or []) if v is not None]
            if values:
                shown = (format_value(v, unit) for v in (values[-1], min(values), max(values)))
                rows.append((_series_name(target, series), *shown))
    return table(["series", "last", "min", "max"], rows)


def _no_data(label: str, panel: Mapping[str, Any]) -> str:
    reasons = []
    for target in panel.get("targets") or []:
        if target.get("error"):
            reasons.append(f"{esc(target.get('refId'))}: <code>{esc(target.get('error'))}</code>")
        else:
            reasons.append(f"{esc(target.get('refId'))}: no series for <code>{esc(target.get('query'))}</code>")
    return (f"<div class='nodata'><b>{esc(label)}</b>: <b>no data</b><br>"
            + "<br>".join(reasons) + "</div>")  # fmt: skip


def _dashboard(
    page: Page, capture: Mapping[str, Any], t0_unix: float, base: Mapping[str, Any], plot_ids: Iterator[int]
) -> None:
    board = capture.get("dashboard") or {}
    panels = capture.get("panels") or []
    empty = [panel_name(p) for p in panels if not panel_has_data(p)]
    anchor = f"dashboard-{board.get('uid', '')}"
    counts = f"{len(panels)} panels" + (f", {len(empty)} with no data" if empty else ", all with data")
    page.add(f"<details class='dashboard' id='{esc(anchor)}'><summary>{esc(board.get('title'))} "
             f"<span class='muted'>({esc(counts)})</span></summary>")  # fmt: skip
    source = str(capture.get("capture_file") or "")
    page.add(f"<p class='muted'>dashboards/{esc(board.get('file'))}; Prometheus's answers: "
             f"<a href='{esc(source)}'>{esc(source)}</a></p>")  # fmt: skip
    if empty:
        page.add("<p><b>No data</b>: " + esc("; ".join(empty)) + "</p>")
    x_range = [float(capture["start"]) - t0_unix, float(capture["end"]) - t0_unix]
    row = None
    for panel in panels:
        if panel.get("row") and panel.get("row") != row:
            row = panel["row"]
            page.add(f"<h3>{esc(row)}</h3>")
        # one block per panel, named as panels_without_data names it: a test finds each panel's plot or note
        page.add(f"<div class='panel' data-panel='{esc(panel_label(capture, panel))}'>")
        if not panel_has_data(panel):
            page.add(_no_data(str(panel.get("title")), panel))
        elif panel.get("type") in STAT_TYPES:
            page.add(f"<p><b>{esc(panel.get('title'))}</b></p>{stat_table(panel)}")
        else:
            figure = panel_figure(panel, t0_unix, x_range, base)
            page.add(figure_html(figure, f"dashboard-plot-{next(plot_ids)}"))
        page.add("</div>")
    page.add("</details>")


def dashboards_section(page: Page, run_path: Path, summary: Mapping[str, Any], bands: Bands | None = None) -> None:
    """The section, from run_path/prometheus/*.json; a note saying why when the run has no capture."""
    page.heading("Dashboards", "dashboards")
    monitoring = summary.get("monitoring") or {}
    try:
        captures = load_captures(run_path)
    except CaptureError as exc:
        page.note(f"The dashboards' capture cannot be read: {exc}")
        return
    if not captures:
        said = str(monitoring.get("prometheus") or "")
        if monitoring.get("status") == "none":
            why = said.removeprefix("none: ")
        else:
            why = f"Prometheus {said}" if said else "the run has no Prometheus capture (prometheus/)"
        page.note(f"No dashboards: {why}.")
        return
    first = captures[0]
    t0_unix = float((summary.get("run") or {}).get("t0_unix") or float(first["start"]))
    page.add(f"<style>{CSS}</style>{RESIZE_ON_OPEN}")
    start, end = float(first["start"]) - t0_unix, float(first["end"]) - t0_unix
    page.note(f"The repo's dashboards (dashboards/*.json) drawn from {first.get('prometheus')}'s answers from "
              f"{start:.0f} s to {end:.0f} s on the run's clock, a point every {fmt_number(float(first['step_s']))} s "
              f"($__rate_interval {first.get('rate_interval')}), every dashboard variable set to All. Open a "
              "dashboard to see its panels.")  # fmt: skip
    plot_ids = itertools.count(1)
    base = base_layout(bands)
    for capture in captures:
        _dashboard(page, capture, t0_unix, base, plot_ids)
