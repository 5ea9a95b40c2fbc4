"""report.html's Dashboards section from a run's prometheus/<uid>.json: a block per dashboard, a plot per panel on
the run's clock with the warm-up and fault bands, legends and units as the dashboard sets them, a table for a stat
panel, and "no data" (with the query or Prometheus's error) for a panel whose queries returned nothing.

The capture files are written here in the shape kvtestbed.monitoring.capture writes them (generated input, like
tests/support/run_folders.py: what can break is the page); the capture itself runs against a real Prometheus in
tests/integration/monitoring/test_capture_prometheus.py, which also opens the page in Chromium.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kvtestbed.monitoring.capture import panels_without_data
from kvtestbed.report import write_report
from tests.support.run_folders import STARTED, make_run

T0 = STARTED.timestamp()


def _series(metric: dict[str, str], values: list[float | str]) -> dict[str, Any]:
    return {"metric": metric, "values": [[T0 - 10 + 5 * i, str(v)] for i, v in enumerate(values)]}


def _target(expr: str, legend: str, result: list[dict[str, Any]], error: str | None = None) -> dict[str, Any]:
    return {"refId": "A", "expr": expr, "query": expr.replace("$__rate_interval", "20s"), "legendFormat": legend,
            "status": "error" if error else "success", "error": error, "resultType": "matrix",
            "result": result}  # fmt: skip


CAPTURE = {
    "dashboard": {"uid": "kvtestbed-engines", "title": "kvtestbed / Engines", "file": "kvtestbed-engines.json"},
    "prometheus": "http://198.18.0.21:9090",
    "start": T0 - 10,
    "end": T0 + 70,
    "step_s": 5.0,
    "scrape_interval_s": 5.0,
    "rate_interval": "20s",
    "panels": [
        {"title": "Instances up", "type": "stat", "unit": "short", "row": "Overview",
         "targets": [_target("sum(redis_up)", "up", [_series({}, [2, 2, 1, 2])])]},
        {"title": "Ops/s", "type": "timeseries", "unit": "ops", "row": "Load and latency",
         "targets": [_target("sum by (host) (rate(redis_commands_processed_total[$__rate_interval]))", "{{host}}",
                             [_series({"host": "pi-1"}, [10, 12, "NaN", 11]),
                              _series({"host": "pi-2"}, [1, 2, 3, 4])])]},
        {"title": "Role", "type": "state-timeline", "unit": "none", "row": "Role and replication",
         "targets": [_target("redis_instance_info", "{{host}}", [_series({"host": "pi-1"}, [1, 1, 0, 0])])]},
        {"title": "TILT mode", "type": "state-timeline", "unit": "none", "row": "Sentinel",
         "targets": [_target('redis_sentinel_tilt{job="sentinel"}', "{{host}}", [])]},
        {"title": "Broken", "type": "timeseries", "unit": "s", "row": "Sentinel",
         "targets": [_target("rate(x[", "", [], error="bad_data: unexpected end of input")]},
    ],
}  # fmt: skip


def plot_specs(page: str) -> list[dict[str, Any]]:
    calls = re.findall(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"', page, re.S)
    return [{"data": json.loads(data), "layout": json.loads(layout)} for data, layout in calls]


def _panel_block(page: str, label: str) -> str:
    start = page.index(f"data-panel='{label}'")
    return page[start : page.index("data-panel=", start + 1) if "data-panel=" in page[start + 1 :] else None]


def test_the_dashboards_are_drawn_from_the_capture(tmp_path: Path) -> None:
    run = make_run(tmp_path, extra={"monitoring": {"status": "captured", "prometheus": CAPTURE["prometheus"]}})
    (run.path / "prometheus").mkdir()
    (run.path / "prometheus" / "kvtestbed-engines.json").write_text(json.dumps(CAPTURE))
    page = write_report(run.path).read_text()

    assert ">Dashboards</h2>" in page and page.count("<details class='dashboard'") == 1
    assert "(5 panels, 2 with no data)" in page
    assert page.count("<script type='text/javascript'>") == 1  # plotly.js still inlined once
    assert "href='prometheus/kvtestbed-engines.json'" in page

    specs = {s["layout"]["title"]["text"]: s for s in plot_specs(page)}
    ops = specs["Ops/s"]
    assert [t["name"] for t in ops["data"]] == ["pi-1", "pi-2"]  # legendFormat {{host}}
    assert ops["data"][0]["x"] == [-10.0, -5.0, 0.0, 5.0] and ops["data"][0]["y"] == [10, 12, None, 11]  # NaN: gap
    assert ops["layout"]["yaxis"]["title"]["text"] == "ops/s"
    assert ops["layout"]["xaxis"]["range"] == [-10.0, 70.0]  # the capture's margins on the run's clock
    assert [(s["x0"], s["x1"]) for s in ops["layout"]["shapes"]] == [(0.0, 5.0), (20.0, 30.0)]  # warm-up, fault
    assert specs["Role"]["data"][0]["line"]["shape"] == "hv"  # a state holds until the next sample
    assert "Instances up" not in specs and "TILT mode" not in specs and "Broken" not in specs

    stat = _panel_block(page, "kvtestbed / Engines: Instances up (Overview)")
    assert "<th>last</th>" in stat and "<td>up</td>" in stat
    tilt = _panel_block(page, "kvtestbed / Engines: TILT mode (Sentinel)")
    assert "<b>no data</b>" in tilt
    assert "no series for <code>redis_sentinel_tilt{job=&quot;sentinel&quot;}</code>" in tilt
    broken = _panel_block(page, "kvtestbed / Engines: Broken (Sentinel)")
    assert "<b>no data</b>" in broken and "bad_data: unexpected end of input" in broken
    assert "<b>no data</b>" not in _panel_block(page, "kvtestbed / Engines: Ops/s (Load and latency)")

    assert panels_without_data(run.path) == [
        "kvtestbed / Engines: TILT mode (Sentinel)",
        "kvtestbed / Engines: Broken (Sentinel)",
    ]


def test_a_damaged_capture_is_one_line_on_the_page(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run.path / "prometheus").mkdir()
    (run.path / "prometheus" / "x.json").write_text(json.dumps({"panels": [], "dashboard": {}}))
    page = write_report(run.path).read_text()
    assert "The dashboards&#x27; capture cannot be read: " in page and "(dashboard, start, end, step_s)" in page


def test_a_run_without_a_capture_says_why(tmp_path: Path) -> None:
    cases = {
        None: "No dashboards: the run has no Prometheus capture (prometheus/).",
        ("none", "none: no Prometheus in the inventory (no host in group 'monitoring')"):
            "No dashboards: no Prometheus in the inventory (no host in group &#x27;monitoring&#x27;).",
        ("unreachable", "unreachable: http://198.18.0.21:9090: connection refused"):
            "No dashboards: Prometheus unreachable: http://198.18.0.21:9090: connection refused.",
    }  # fmt: skip
    for n, (monitoring, said) in enumerate(cases.items()):
        extra = {"monitoring": {"status": monitoring[0], "prometheus": monitoring[1]}} if monitoring else {}
        run = make_run(tmp_path / str(n), extra=extra)
        page = write_report(run.path).read_text()
        assert ">Dashboards</h2>" in page and said in page, said
        assert "<details class='dashboard'" not in page
