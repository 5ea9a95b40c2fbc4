"""The dashboards' capture against a REAL Prometheus (Debian's 2.42) scraping a REAL redis_exporter (Debian's 1.45)
in front of a real redis-server, and itself, every second: the engines dashboard and a planted one captured over the
window, the report drawn from it in headless Chromium with the network off.

What is checked: every panel with data is drawn (or tabled, for a stat), no console error, no request; a panel whose
metric nothing exports, and one whose query Prometheus refuses, say "no data"; `panels_without_data` names exactly
those (on the engines dashboard: the replica and Sentinel panels, since a lone redis-server has neither). And a
Prometheus that refuses connections, or accepts one and never answers, costs the run one line, within a bound.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtestbed.inventory import Inventory
from kvtestbed.monitoring.capture import (
    REACH_TIMEOUT_S,
    Budget,
    Prometheus,
    capture,
    capture_dashboard,
    capture_run,
    load_captures,
    panel_has_data,
    panel_label,
    panels_without_data,
    query_window,
)
from kvtestbed.monitoring.dashboards import load_dashboard
from kvtestbed.report import write_report
from kvtestbed.report.dashboards import STAT_TYPES
from kvtestbed.results.store import RunDir
from kvtestbed.results.summary import complete_summary
from tests.support.binaries import require
from tests.support.dashboards import DASHBOARDS
from tests.support.report_page import offline_console
from tests.support.servers import LOOPBACK, ManagedProcess, free_port
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCRAPE_S = 1  # seconds: a few samples in a few seconds
SAMPLES = 6  # per series before the capture: rates over $__rate_interval (15 s here) need two
ENGINES = DASHBOARDS / "kvtestbed-engines.json"
# what a lone redis-server cannot export: a replica's figures and a Sentinel's (job="sentinel" is not scraped)
NEEDS_REPLICA_OR_SENTINEL = ('job="sentinel"', "redis_connected_slave_", "redis_master_link_up")

PLANTED = {
    "uid": "planted",
    "title": "Planted",
    "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
    "panels": [
        {"type": "text", "title": "read me", "options": {"content": "not a query"}},
        {"type": "row", "title": "Row", "collapsed": True, "panels": [
            {"type": "timeseries", "title": "Prometheus itself", "fieldConfig": {"defaults": {"unit": "short"}},
             "targets": [{"refId": "A", "expr": 'up{job="prometheus"}', "legendFormat": "{{job}} {{instance}}"}]},
            {"type": "timeseries", "title": "Absent metric", "fieldConfig": {"defaults": {"unit": "s"}},
             "targets": [{"refId": "A", "expr": "rate(kvt_nothing_exports_this_total[$__rate_interval])"}]},
            {"type": "timeseries", "title": "Refused query", "fieldConfig": {"defaults": {"unit": "s"}},
             "targets": [{"refId": "A", "expr": "rate(redis_up[$__rate_interval]"}]},
        ]},
    ],
}  # fmt: skip


@dataclass
class Stack:
    url: str
    port: int
    started: float  # unix time before anything was scraped: the "run's" start


def _binary(name: str) -> str:
    found = shutil.which(name) or (Path(f"/usr/bin/{name}").exists() and f"/usr/bin/{name}") or None
    return require(found, name, f"apt-get install {name} (Debian's package)")


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=5) as r:
        return list(json.loads(r.read())["data"]["result"])


@pytest.fixture
def stack(server_factory: Any, tmp_path: Path) -> Iterator[Stack]:
    """redis-server <- redis_exporter <- Prometheus (and Prometheus <- itself), scraped every second, with the labels
    the prometheus role's file_sd targets give (job redis, host, deployment, engine, instance_port)."""
    prometheus_bin, exporter_bin = _binary("prometheus"), _binary("prometheus-redis-exporter")
    started = time.time()
    redis = server_factory("redis")
    exporter_port, prometheus_port = free_port(), free_port()
    exporter = ManagedProcess("redis-exporter", [exporter_bin, "-redis.addr", f"redis://{LOOPBACK}:{redis.port}",
                              "-web.listen-address", f"{LOOPBACK}:{exporter_port}"], tmp_path / "exporter",
                              exporter_port)  # fmt: skip
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "scrape_configs": [
            {"job_name": "redis", "static_configs": [{"targets": [f"{LOOPBACK}:{exporter_port}"], "labels": {
                "host": "pi-1", "deployment": "redis", "engine": "redis", "instance_port": str(redis.port)}}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{LOOPBACK}:{prometheus_port}"]}]},
        ],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = ManagedProcess("prometheus", [prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--web.listen-address={LOOPBACK}:{prometheus_port}",
                                f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--log.level=warn"],
                                tmp_path / "prometheus", prometheus_port)  # fmt: skip
    exporter.start()
    prometheus.start()
    try:
        with redis.client() as client:  # keys, one with a TTL, hits and misses: the keyspace panels have figures
            client.set("k1", "v")
            client.set("k2", "v", ex=600)
            client.get("k1")
            client.get("nope")
        url = f"http://{LOOPBACK}:{prometheus_port}"

        def samples() -> bool:
            try:
                found = _query(url, f'count_over_time(redis_up{{job="redis"}}[1m]) >= {SAMPLES}')
                return bool(found) and bool(_query(url, f'count_over_time(up{{job="prometheus"}}[1m]) >= {SAMPLES}'))
            except OSError:
                return False

        wait_until(samples, 40, 0.5, f"{SAMPLES} samples of the exporter and of Prometheus itself")
        yield Stack(url, prometheus_port, started)
    finally:
        prometheus.stop()
        exporter.stop()


def test_the_captured_dashboards_are_drawn_and_every_empty_panel_says_so(stack: Stack, tmp_path: Path) -> None:
    dashboards = tmp_path / "dashboards"  # the engines dashboard as the repo has it, and the planted one
    dashboards.mkdir()
    shutil.copy(ENGINES, dashboards / ENGINES.name)
    (dashboards / "planted.json").write_text(json.dumps(PLANTED))
    run = RunDir.create(tmp_path / "results", "capture", datetime.now(UTC))
    end = time.time()
    lines: list[str] = []
    monitoring = capture_run(_inventory(stack.port), run.path, stack.started, end, dashboards, say=lines.append)
    summary = {"schema": 1, "monitoring": monitoring,
               "run": {"id": run.id, "scenario": "capture", "started": datetime.now(UTC).isoformat(),
                       "status": "passed", "t0_unix": stack.started, "duration_s": end - stack.started},
               "phases": {"measure": [0.0, end - stack.started]}}  # fmt: skip
    run.write_summary(complete_summary(summary))
    page = write_report(run.path)

    # the capture: Prometheus's own interval read, every panel of both dashboards, the refused query recorded
    assert (monitoring["status"], monitoring["scrape_interval_s"], monitoring["step_s"]) == ("captured", 1.0, 1.0)
    assert monitoring["prometheus"] == stack.url and len(lines) == 1, lines
    panels = len(load_dashboard(ENGINES).panels) + 3  # the planted text panel has no query
    assert lines[0].startswith(f"monitoring: 2 dashboards, {panels} panels (")
    assert "1 queries failed or not run" in lines[0], lines
    assert set(monitoring["dashboards"]) == {"kvtestbed-engines", "planted"}
    captures = {c["dashboard"]["uid"]: c for c in load_captures(run.path)}
    engines = captures["kvtestbed-engines"]
    refused = captures["planted"]["panels"][2]["targets"][0]
    assert refused["status"] == "error" and refused["error"].startswith("bad_data:"), refused
    assert "[15s]" in captures["planted"]["panels"][1]["targets"][0]["query"]  # max(4 x 1 s, 15 s)

    expected_empty = [
        panel_label(engines, p)
        for p in engines["panels"]
        if all(any(mark in t["expr"] for mark in NEEDS_REPLICA_OR_SENTINEL) for t in p["targets"])
    ]
    assert "kvtestbed / Engines: TILT mode (Sentinel)" in expected_empty
    assert "kvtestbed / Engines: Replica ack lag (Role and replication)" in expected_empty
    expected_empty += ["Planted: Absent metric (Row)", "Planted: Refused query (Row)"]
    assert panels_without_data(run.path) == expected_empty
    assert monitoring["dashboards"]["kvtestbed-engines"]["without_data"] == len(expected_empty) - 2

    # no time left: nothing is queried, every panel is without data, and says why
    late = capture(stack.url, tmp_path / "late", stack.started, end, [ENGINES], total_timeout_s=0)
    assert late["dashboards"]["kvtestbed-engines"]["without_data"] == len(load_dashboard(ENGINES).panels)
    skipped = load_captures(tmp_path / "late")[0]["panels"][0]["targets"][0]
    assert (skipped["status"], skipped["error"]) == ("skipped", "not queried: the capture's 0 s were used up")

    # the page: every plot drawn offline without a console error; each panel's block drawn, tabled or "no data"
    plots = sum(1 for c in captures.values() for p in c["panels"] if panel_has_data(p) and p["type"] not in STAT_TYPES)
    assert plots > 10
    with offline_console(tmp_path) as console:
        state = console.open(page)
        assert (state["total"], state["drawn"]) == (plots, plots), state
        assert state["errors"] == [] and console.errors == [] and console.requests == []
        console.tools.js("document.querySelectorAll('details.dashboard').forEach(d => d.open = true)")
        blocks = console.tools.js(
            "[...document.querySelectorAll('div.panel')].map(d => ({name: d.dataset.panel, text: d.innerText,"
            " drawn: !!d.querySelector('.js-plotly-plot .main-svg'), table: !!d.querySelector('table')}))"
        )
    assert len(blocks) == sum(len(c["panels"]) for c in captures.values())
    for block in blocks:
        if block["name"] in expected_empty:
            assert "no data" in block["text"] and not block["drawn"], block
        else:
            assert (block["drawn"] or block["table"]) and "no data" not in block["text"], block


def _inventory(port: int) -> Inventory:
    listing = {"_meta": {"hostvars": {"pc-1": {"ansible_host": LOOPBACK, "prometheus_port": port}}},
               "all": {"children": ["monitoring"]}, "monitoring": {"hosts": ["pc-1"]}}  # fmt: skip
    return Inventory.from_listing("test", listing)


def test_a_prometheus_that_refuses_or_never_answers_costs_one_line(tmp_path: Path) -> None:
    lines: list[str] = []
    refused = capture_run(_inventory(free_port()), tmp_path / "a", time.time() - 60, say=lines.append)
    assert refused["status"] == "unreachable" and refused["prometheus"].startswith("unreachable: http://127.0.0.1:")
    assert "connection refused" in refused["prometheus"] and len(lines) == 1 and lines[0].startswith("monitoring: ")
    assert not (tmp_path / "a" / "prometheus").exists()

    # gone after the first query: the others are not run, each would wait its own timeout on a hung one
    window = query_window(time.time() - 60, time.time(), 5.0, time.time())
    gone = capture_dashboard(
        Prometheus(f"http://{LOOPBACK}:{free_port()}"), load_dashboard(ENGINES), window, Budget(60)
    )
    statuses = [t["status"] for p in gone["panels"] for t in p["targets"]]
    assert statuses[0] == "error" and set(statuses[1:]) == {"skipped"}, statuses
    assert gone["panels"][1]["targets"][0]["error"].startswith("not queried: Prometheus stopped answering")

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never says a word
        silent.bind((LOOPBACK, 0))
        silent.listen(8)
        began = time.monotonic()
        mute = capture_run(_inventory(silent.getsockname()[1]), tmp_path / "b", time.time() - 60, say=lines.append)
        took = time.monotonic() - began
    assert mute["status"] == "unreachable" and "no answer" in mute["prometheus"], mute
    assert took < REACH_TIMEOUT_S + 3 and len(lines) == 2
