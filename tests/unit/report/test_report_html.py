"""report.html: its sections and plots, one copy of plotly.js, fault bands on every time plot, points cut down
for long runs, and who was primary when.

Run folders are generated (tests/support/run_folders.py): two clients, a SIGKILL at 20 s healed at 30 s, a
Sentinel failover and ops left unknown. The plots are checked drawn by a real browser in
tests/integration/report/test_report_chromium.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kvtestbed.report import write_report
from kvtestbed.report.data import MAX_BINS, MAX_CDF_POINTS, client_series, primary_spans
from tests.support.run_folders import NEW_PRIMARY, make_run

INVENTORY = {"hosts": {"pi-1": {"address": "198.18.0.11"}, "pi-2": {"address": "198.18.0.12"}}}


def plot_specs(page: str) -> list[dict]:
    """The data and layout of every Plotly.newPlot call in a page."""
    calls = re.findall(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"', page, re.S)
    return [{"data": json.loads(data), "layout": json.loads(layout)} for data, layout in calls]


def test_the_report_has_every_section_and_one_copy_of_plotly(tmp_path: Path) -> None:
    run = make_run(
        tmp_path,
        slos=[{"figure": "clients.*.unavailability_s", "op": "<=", "threshold": 5}],
        consumers={"c1": 120, "c2": 80},
    )
    page = write_report(run.path).read_text()
    sections = ["SLOs", "Clients: accounting", "Faults", "Latency over time", "Throughput over time"]
    sections += ["Latency CDF", "Failover timeline", "Lost and duplicated", "Per-consumer distribution"]
    for section in sections:
        assert f">{section}</h2>" in page, section
    assert page.count("<script type='text/javascript'>") == 1
    assert "https://" not in page.split("<script type='text/javascript'>")[0]  # no stylesheet or font fetched
    assert "clients.sentinel-default.unavailability_s" in page and ">FAIL<" in page  # the worst client, named

    specs = plot_specs(page)
    titles = [s["layout"]["title"]["text"] for s in specs]
    assert titles == [
        "Latency over time, per second (ok ops)",
        "Throughput of quorum: ok / fail / unknown per second",
        "Throughput of sentinel-default: ok / fail / unknown per second",
        "Latency CDF (ok ops)",
        "Who was primary when",
        "Acknowledged writes lost, unexpected values, unknown ops",
        "load.consumer.*",
    ]
    for spec in specs:
        if spec["layout"].get("xaxis", {}).get("title", {}).get("text") == "s since start":
            bands = [(s["x0"], s["x1"]) for s in spec["layout"]["shapes"]]
            assert bands == [(0.0, 5.0), (20.0, 30.0)], spec["layout"]["title"]  # warm-up and the fault
    throughput = specs[1]["data"]
    assert [t["name"] for t in throughput] == ["ok", "fail", "unknown"]
    assert max(throughput[2]["y"]) > 0  # the op in flight when the primary died


def test_long_runs_are_binned_and_the_cdf_cut_down(tmp_path: Path) -> None:
    duration = 4 * 3600.0
    ops = [
        {"t_intended": t / 10, "t_start": t / 10, "t_end": t / 10 + 0.001 * (1 + t % 7), "result": "ok"}
        for t in range(int(duration * 10))
    ]
    series = client_series("w1", ops, duration)
    assert series.bin_s == 10 and len(series.times) <= MAX_BINS
    assert series.rates["ok"][0] == 10.0  # ops per second, not per bin
    assert len(series.cdf_ms) <= MAX_CDF_POINTS + 1 and series.cdf_fraction[-1] == 1.0
    assert series.cdf_ms[-1] == max(op["t_end"] - op["t_intended"] for op in ops) * 1000


def test_latency_counts_from_the_intended_start() -> None:
    ops = [{"t_intended": 0.0, "t_start": 0.5, "t_end": 0.501, "result": "ok"}]  # waited 0.5 s to be sent
    series = client_series("w1", ops, 1)
    assert series.p50_ms == [501.0]


def test_primary_spans_follow_the_runner_and_sentinel() -> None:
    timeline = [
        {"t": 0.5, "source": "runner", "event": "primary", "detail": {"group": "redis", "host": "pi-1"}},
        {"t": 3.0, "source": "runner", "event": "primary", "detail": {"group": "redis", "host": "pi-1"}},
        {"t": 25.1, "source": "sentinel", "event": "+switch-master", "detail": {"master": "redis", "to": NEW_PRIMARY}},
        {"t": 25.4, "source": "runner", "event": "primary", "detail": {"group": "redis", "host": "pi-2"}},
        {"t": 26.0, "source": "w1", "event": "reconnect", "detail": {}},
    ]
    spans = primary_spans(timeline, INVENTORY, 60.0)
    assert [(s.primary, s.t_from, s.t_to) for s in spans] == [("pi-1", 0.5, 25.1), ("pi-2", 25.1, 60.0)]


def test_a_run_without_ops_or_faults_still_gets_a_report(tmp_path: Path) -> None:
    run = make_run(tmp_path, clients={}, duration_s=5, fault_at=2)
    page = write_report(run.path).read_text()
    assert "No op log (ops/*.jsonl) in this run." in page
    assert "No client of the runner" in page


def test_agents_and_locust_latency_figures_get_a_table_of_their_own() -> None:
    from kvtestbed.report.html import latency_groups

    load = {
        "agents.observer-1.listeners.pi-3-async.notify_latency.p50_us": 382.0,
        "agents.observer-1.listeners.pi-3-async.notify_latency.p99_us": 2339.0,
        "agents.observer-1.writer.writes": 9668.0,  # a counter, not a histogram
        "locust.GET_kv.count": 20235.0,
        "locust.GET_kv.p50_us": 221.0,
        "locust.failures": 89.0,
    }
    groups = latency_groups(load)
    assert groups == {
        "agents.observer-1.listeners.pi-3-async.notify_latency": {"p50_us": 382.0, "p99_us": 2339.0},
        "locust.GET_kv": {"count": 20235.0, "p50_us": 221.0},
    }


def test_the_agents_accounting_and_the_engine_tools_get_sections(tmp_path: Path) -> None:
    accounting = {"streams": {"requests": 6000, "completed": 6000, "lost": 0, "duplicated": 3, "reclaimed": 12,
                              "per_worker": {"streams": 2990, "streams-worker-2": 3013}}}
    benchmarks = {"redis-c50": {"tool": "redis-benchmark", "version": "redis-benchmark 7.0.15", "tool_host": "pi-3",
                                "target": "198.18.0.11:6379", "target_host": "pi-1",
                                "settings": {"clients": 50, "pipeline": 1},
                                "tests": {"set": {"rps": 41234.5, "p50_us": 903, "p99_us": 2111, "max_us": 9000},
                                          "get": {"rps": 45678.0, "p50_us": 851, "p99_us": 1999, "max_us": 8000}}}}
    run = make_run(tmp_path, extra={"accounting": accounting, "benchmarks": benchmarks},
                   slos=[{"figure": "benchmarks.redis-c50.get.rps", "op": ">=", "threshold": 40000},
                         {"figure": "accounting.streams.lost", "op": "==", "threshold": 0}])
    summary = json.loads((run.path / "summary.json").read_text())
    assert [(s["figure"], s["value"], s["ok"]) for s in summary["slo"]] == [
        ("benchmarks.redis-c50.get.rps", 45678.0, True), ("accounting.streams.lost", 0, True)]
    page = write_report(run.path).read_text()
    assert ">Engine tools (baseline)</h2>" in page and "pi-3 → pi-1" in page and "45,678" in page
    assert ">streams</td>" in page  # the accounting table's row
    titles = [s["layout"]["title"]["text"] for s in plot_specs(page)]
    assert "accounting.streams.per_worker" in titles
    assert "Requests per second by engine tool run" in titles
