"""The dashboards as the report's capture reads them (kvtestbed.monitoring.dashboards / capture), no Prometheus:
Grafana's variables replaced as Grafana would with every variable at "All", every queryable panel found (rows'
nested ones too, text panels and hidden targets not), the query window and its step, where the inventory's
Prometheus is, legends, and what counts as data.

Every real dashboard's every expression, substituted, is checked by promtool (Debian's prometheus package).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kvtestbed.inventory import Inventory
from kvtestbed.monitoring.capture import (
    MARGIN_S,
    MAX_POINTS,
    CaptureError,
    panel_has_data,
    panels_without_data,
    prometheus_url,
    query_window,
    series_has_data,
)
from kvtestbed.monitoring.dashboards import (
    dashboard_files,
    duration,
    interval_values,
    load_dashboard,
    parse_dashboard,
    parse_duration,
    rate_interval_s,
    substitute,
)
from kvtestbed.report.dashboards import format_value, legend
from tests.support.binaries import require
from tests.support.dashboards import DASHBOARDS
from tests.support.dashboards import panels as every_panel

# -- Grafana's variables -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("step_s", "expected"), [(1.0, "15s"), (5.0, "20s"), (10.0, "40s"), (15.0, "60s")])
def test_rate_interval_is_four_steps_never_under_15_s(step_s: float, expected: str) -> None:
    assert interval_values(step_s, step_s, 600)["__rate_interval"] == expected


def test_rate_interval_follows_grafana_when_the_step_is_coarser_than_the_scrape() -> None:
    # Grafana: max($__interval + scrape interval, 4 x scrape interval)
    assert rate_interval_s(step_s=30, scrape_s=5) == 35
    assert rate_interval_s(step_s=5, scrape_s=5) == 20


def test_each_spelling_of_a_variable_is_replaced() -> None:
    intervals = interval_values(5, 5, 120)
    expr = ('sum(rate(x{host=~"$host", engine=~"${engine}", d=~"[[deployment]]", a=~"${agent:regex}"}'
            "[$__rate_interval])) / $__interval_ms + 0 * $__range_s")  # fmt: skip
    assert substitute(expr, intervals, {"host": ".*", "engine": "redis|valkey"}) == (
        'sum(rate(x{host=~".*", engine=~"redis|valkey", d=~".*", a=~".*"}[20s])) / 5000 + 0 * 120'
    )
    assert substitute("avg_over_time(up[$__interval])", interval_values(2.5, 2.5, 60)) == "avg_over_time(up[2500ms])"
    assert substitute("up[$__range]", interval_values(5, 5, 90)) == "up[90s]"


def test_a_regex_anchor_is_not_taken_for_a_variable() -> None:
    assert substitute('up{job=~"redis$"}', interval_values(5, 5, 60)) == 'up{job=~"redis$"}'


def test_durations() -> None:
    assert [parse_duration(t) for t in ("5s", "1m30s", "250ms", "2h", "1d")] == [5, 90, 0.25, 7200, 86400]
    assert parse_duration("5 s") is None and parse_duration("soon") is None and parse_duration("") is None
    assert [duration(s) for s in (20, 15.0, 2.5, 0.0001)] == ["20s", "15s", "2500ms", "1ms"]


def test_every_expression_of_every_dashboard_is_valid_promql_once_substituted(tmp_path: Path) -> None:
    found = shutil.which("promtool") or (Path("/usr/bin/promtool").exists() and "/usr/bin/promtool") or None
    promtool = require(found, "promtool", "apt-get install prometheus: Debian's package ships promtool")
    rules = []
    for path in dashboard_files(DASHBOARDS):
        board = load_dashboard(path)
        for panel in board.panels:
            for target in panel.targets:
                query = substitute(target.expr, interval_values(5, 5, 300), board.all_values)
                assert "$" not in query.replace('$"', ""), (board.file, panel.title, query)
                rules.append({"record": f"check:{len(rules)}", "expr": query})
    assert len(rules) > 50  # the four dashboards' targets: a walk that found none would pass the rest
    file = tmp_path / "queries.rules.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    checked = subprocess.run([promtool, "check", "rules", str(file)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- the panels --------------------------------------------------------------------------------------------------


def test_rows_nested_panels_count_and_text_panels_rows_and_hidden_targets_do_not() -> None:
    board = parse_dashboard(
        {
            "uid": "t",
            "title": "T",
            "templating": {"list": [{"name": "host", "allValue": "pi-.*"}, {"name": "agent"}]},
            "panels": [
                {"type": "text", "title": "read me", "options": {"content": "hello"}},
                {"type": "stat", "title": "top", "targets": [{"refId": "A", "expr": "up"}]},
                {"type": "row", "title": "Open row", "collapsed": False, "panels": []},
                {"type": "timeseries", "title": "a", "fieldConfig": {"defaults": {"unit": "s"}},
                 "targets": [{"refId": "A", "expr": "x", "legendFormat": "{{host}}"},
                             {"refId": "B", "expr": "y", "hide": True}, {"refId": "C", "expr": ""}]},
                {"type": "row", "title": "Closed row", "collapsed": True,
                 "panels": [{"type": "timeseries", "title": "nested", "targets": [{"refId": "A", "expr": "z"}]}]},
            ],
        },
        "t.json",
    )  # fmt: skip
    assert [(p.title, p.row, p.unit, [t.expr for t in p.targets]) for p in board.panels] == [
        ("top", "", "", ["up"]),
        ("a", "Open row", "s", ["x"]),
        ("nested", "Closed row", "", ["z"]),
    ]
    assert board.all_values == {"host": "pi-.*", "agent": ".*"}
    assert board.panels[1].targets[0].legend == "{{host}}"


def test_every_panel_of_the_repo_dashboards_with_a_query_is_captured() -> None:
    for path in dashboard_files(DASHBOARDS):
        raw = json.loads(path.read_text())
        expected = [p["title"] for p in every_panel(raw) if p.get("type") != "row" and p.get("targets")]
        assert [p.title for p in load_dashboard(path).panels] == expected, path.name


# -- the window, the inventory, data -----------------------------------------------------------------------------


def test_the_window_has_margins_never_passes_now_and_is_coarsened_for_long_runs() -> None:
    short = query_window(1000.0, 1060.0, scrape_s=5.0, now=1200.0)
    assert (short.start, short.end, short.step_s) == (1000 - MARGIN_S, 1060 + MARGIN_S, 5.0)
    assert query_window(1000.0, 1060.0, scrape_s=5.0, now=1063.0).end == 1063.0  # nothing after now
    day = query_window(0.0, 86400.0, scrape_s=5.0, now=1e9)
    assert day.step_s > 5 and (day.end - day.start) / day.step_s <= MAX_POINTS and day.step_s.is_integer()


def _inventory(monitoring_vars: dict[str, object], all_vars: dict[str, object] | None = None) -> Inventory:
    hostvars = {"pc-1": {"ansible_host": "198.18.0.21", **monitoring_vars, **(all_vars or {})},
                "pi-1": {"ansible_host": "198.18.0.11", **(all_vars or {})}}  # fmt: skip
    listing = {"_meta": {"hostvars": hostvars}, "all": {"children": ["monitoring", "redis", "watch"]},
               "monitoring": {"hosts": ["pc-1"]}, "redis": {"hosts": ["pi-1"]},
               "watch": {"hosts": ["pi-1"]}}  # fmt: skip
    return Inventory.from_listing("test", listing)


def test_the_inventorys_prometheus() -> None:
    assert prometheus_url(_inventory({})) == ("http://198.18.0.21:9090", "")
    assert prometheus_url(_inventory({"prometheus_port": 9091})) == ("http://198.18.0.21:9091", "")
    assert prometheus_url(_inventory({}, {"prometheus_group": "watch"})) == ("http://198.18.0.11:9090", "")
    url, why = prometheus_url(_inventory({}, {"prometheus_group": "nobody"}))
    assert url is None and why == "no Prometheus in the inventory (no host in group 'nobody')"


def test_nan_is_no_data_and_a_panel_has_data_when_any_target_has() -> None:
    nan_only = {"metric": {}, "values": [[1, "NaN"], [2, "NaN"]]}
    one = {"metric": {}, "values": [[1, "NaN"], [2, "0"]]}
    assert not series_has_data(nan_only) and series_has_data(one) and not series_has_data({"values": []})
    assert panel_has_data({"targets": [{"result": [nan_only]}, {"result": [one]}]})
    assert not panel_has_data({"targets": [{"result": [nan_only]}, {"result": [], "error": "bad_data: x"}]})


def test_panels_without_data_refuses_a_run_that_has_no_capture(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"monitoring": {"prometheus": "unreachable: http://x: refused"}}))
    with pytest.raises(CaptureError, match=r"no prometheus/ capture \(monitoring.prometheus: unreachable"):
        panels_without_data(tmp_path)


def test_legends_as_grafana_fills_them() -> None:
    metric = {"__name__": "redis_up", "deployment": "redis", "host": "pi-1", "instance_port": "6379"}
    assert legend("{{deployment}} {{ host }}:{{instance_port}}", metric, "q") == "redis pi-1:6379"
    assert legend("{{host}} {{slave_ip}} lag", metric, "q") == "pi-1  lag"  # a label it lacks is empty
    assert legend("", metric, "q") == 'redis_up{deployment="redis", host="pi-1", instance_port="6379"}'
    assert legend("", {}, "vector(0)") == "vector(0)"


def test_stat_values_carry_their_unit() -> None:
    assert format_value(0.256, "percentunit") == "25.6 %"
    assert format_value(1_500_000, "bytes") == "1.5 MB" and format_value(2048, "Bps") == "2.05 kB/s"
    assert format_value(12, "ops") == "12 ops/s" and format_value(3, "short") == "3" and format_value(None, "s") == "-"
