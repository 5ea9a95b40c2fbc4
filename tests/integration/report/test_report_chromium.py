"""report.html and the comparison page in a real browser, with the network off: every plot drawn, no console
error. Headless Chromium (Debian's), driven over the DevTools protocol (tests/support/browser.py).

The run folders are generated (tests/support/run_folders.py: two clients, a SIGKILL at 20 s, a Sentinel failover,
ops left unknown): what can break here is the page, not the numbers. The checker is first shown a planted
violation (a page that loads plotly.js from the network), so a checker that sees nothing cannot pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import plotly.graph_objects as go
import pytest

from kvtestbed.report import compare, write_compare_html, write_report
from tests.support.report_page import Console, offline_console
from tests.support.run_folders import make_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with offline_console(tmp_path) as watcher:
        yield watcher


def test_a_page_that_needs_the_network_is_caught(tmp_path: Path, console: Console) -> None:
    planted = tmp_path / "planted.html"
    go.Figure(go.Scatter(x=[1, 2], y=[1, 2])).write_html(planted, include_plotlyjs="cdn")
    state = console.open(planted)
    assert state["hooked"] and state["total"] == 1 and state["drawn"] == 0
    assert console.requests and console.requests[0].startswith("https://")
    assert any("Plotly is not defined" in e for e in state["errors"]), state["errors"]
    assert any("Plotly is not defined" in e for e in console.errors), console.errors
    assert "load failed: blocked by inspector" in console.errors  # our block list, before the offline emulation


def test_report_and_comparison_draw_every_plot_offline_without_console_errors(tmp_path: Path, console: Console) -> None:
    results = tmp_path / "results"
    first = make_run(results, slos=[{"figure": "clients.*.lost", "op": "<=", "threshold": 0}], consumers={"c1": 9})
    sweep = [
        make_run(results, "scale", seed=n, base_ms=n, overrides={"load.clients": n}, duration_s=20, fault_at=8)
        for n in (1, 2, 4)
    ]
    report = write_report(first.path)
    comparison = write_compare_html(compare([r.path for r in sweep]), results / "compare.html")

    for page, expected_plots in ((report, 7), (comparison, 12)):
        state = console.open(page)
        assert state["hooked"], page.name
        assert (state["total"], state["drawn"]) == (expected_plots, expected_plots), (page.name, state)
        assert state["errors"] == [] and console.errors == [], (page.name, state["errors"], console.errors)
        assert console.requests == [], page.name
