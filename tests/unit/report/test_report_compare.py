"""compare: every figure side by side with the baseline first, diffs whose verdict follows the figure's direction,
repeats folded into median and spread, sweeps found; and `kvtestbed report`'s entry point.

Run folders are generated (tests/support/run_folders.py): compare reads summary.json only, so the shapes matter
(two clients, a failover, overrides), not where the numbers came from.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvtestbed.report import ReportError, compare, format_table, main_report, write_compare_html
from kvtestbed.report.compare import Comparison, FigureRow
from tests.support.run_folders import make_run

SHORT = {"duration_s": 10.0, "fault_at": 4.0, "rate": 20.0}


def row(comparison: Comparison, figure: str) -> FigureRow:
    return next(r for r in comparison.rows if r.figure == figure)


def test_two_runs_side_by_side_with_direction_aware_verdicts(tmp_path: Path) -> None:
    redis = make_run(tmp_path, "failover-redis", clients={"w1": 4.0}, **SHORT)
    valkey = make_run(tmp_path, "failover-valkey", clients={"w1": 2.0}, lost=5, **SHORT)
    result = compare([redis.path, valkey.path])
    assert [c.label for c in result.columns] == [redis.id, valkey.id]
    unavailable = row(result, "clients.w1.unavailability_s").cells
    assert (unavailable[0].median, unavailable[1].median) == (4.0, 2.0)
    assert (unavailable[1].diff, unavailable[1].diff_pct, unavailable[1].verdict) == (-2.0, -50.0, "better")
    lost = row(result, "clients.w1.lost").cells[1]
    assert (lost.diff, lost.diff_pct, lost.verdict) == (5.0, None, "worse")  # no % of a zero baseline
    ok = row(result, "clients.w1.ok").cells[1]
    assert ok.verdict == "better" and ok.diff is not None and ok.diff > 0  # shorter outage: more ok ops
    assert row(result, "clients.w1.attempted").cells[1].verdict is None  # no direction: never coloured
    assert row(result, "faults.count").cells[1].verdict is None

    text = format_table(result)
    assert text.splitlines()[0] == f"A = {redis.id} (baseline)"
    line = next(ln for ln in text.splitlines() if ln.startswith("clients.w1.unavailability_s "))
    assert re.search(r"\b4\s+2\s+-50\.0% better$", line), line
    assert re.search(r"\b0\s+5\s+\+5 worse$", next(ln for ln in text.splitlines() if ln.startswith("clients.w1.lost ")))


def test_repeats_of_one_scenario_show_median_and_spread(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, "kill", seed=s, clients={"w1": outage}, **SHORT) for s, outage in enumerate((3, 5, 4))]
    other = make_run(tmp_path, "kill", clients={"w1": 8.0}, overrides={"faults.0.kind": "stop"}, **SHORT)
    result = compare([r.path for r in runs] + [other.path])
    assert [len(c.runs) for c in result.columns] == [3, 1]
    assert result.columns[0].label == "kill ×3"
    base, contender = row(result, "clients.w1.unavailability_s").cells
    assert (base.median, base.low, base.high, base.n) == (4.0, 3.0, 5.0, 3)
    assert (contender.diff, contender.diff_pct, contender.verdict) == (4.0, 100.0, "worse")
    assert result.sweep is None  # the differing override is not a number
    assert "4 [3–5]" in format_table(result)


def test_pure_repeats_make_one_column_and_say_so(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, "kill", seed=s, **SHORT) for s in range(2)]
    result = compare([r.path for r in runs])
    assert len(result.columns) == 1 and "2 repeats" in result.notes[0]


def test_runs_differing_in_one_numeric_override_are_a_sweep(tmp_path: Path) -> None:
    runs = [
        make_run(tmp_path, "scale", seed=n, base_ms=n, overrides={"load.clients": n, "engine": "redis"}, **SHORT)
        for n in (4, 1, 2)
    ]
    result = compare([r.path for r in runs])
    assert result.sweep is not None
    assert (result.sweep.path, result.sweep.values) == ("load.clients", [4.0, 1.0, 2.0])
    assert [c.label for c in result.columns] == ["load.clients=4", "load.clients=1", "load.clients=2"]
    out = write_compare_html(result, tmp_path / "cmp.html")
    page = out.read_text()
    assert "Scalability: against load.clients" in page
    # 6 key figures, each as a bar chart and as a curve against the swept value
    assert page.count('class="plotly-graph-div"') == 12
    assert page.count("Plotly.newPlot") == 12
    assert page.count("<script type='text/javascript'>") == 1  # plotly.js, inlined once


def test_main_report_writes_one_report_or_a_comparison_page(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", **SHORT)
    b = make_run(tmp_path, "b", **SHORT)
    assert main_report([a.path], None) == a.report_path and a.report_path.stat().st_size > 0
    out = main_report([a.path, b.path], None)
    assert out.parent == tmp_path and re.fullmatch(r"compare-\d{8}-\d{6}\.html", out.name)
    assert f"href='{a.id}/report.html'" in out.read_text()  # the report written above, linked relatively
    assert main_report([a.path, b.path], tmp_path / "x" / "c.html") == tmp_path / "x" / "c.html"


def test_main_report_refuses_a_folder_that_is_not_a_run_in_one_line(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", **SHORT)
    (tmp_path / "x").mkdir()
    with pytest.raises(ReportError) as error:
        main_report([a.path, tmp_path / "x"], None)
    assert str(error.value) == f"{tmp_path / 'x'}: no summary.json: not a kvtestbed run folder"
    assert not list(tmp_path.glob("compare-*"))  # nothing written
    with pytest.raises(ReportError, match="no run folder given"):
        main_report([], None)
