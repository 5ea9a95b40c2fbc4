"""The results folder: its layout and names, atomic summary writes checked against the schema, appends that
survive a killed writer, and the one-line errors for folders and files that are not a run's.

Run folders are generated (tests/support/run_folders.py): the code under test only reads and writes files.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from kvtestbed.results.store import RunDir, RunDirError, find_runs
from tests.support.run_folders import STARTED, make_run

WHEN = datetime(2026, 12, 1, 9, 5, 7)


def minimal_summary(run: RunDir) -> dict[str, Any]:
    return {
        "schema": 1,
        "run": {"id": run.id, "scenario": "demo", "started": "2026-12-01T09:05:07+00:00", "status": "passed"},
        "figures": {},
    }


def test_create_names_the_folder_by_time_and_scenario_and_lays_it_out(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "results", "demo", WHEN)
    assert run.path == tmp_path / "results" / "20261201-090507-demo"
    assert run.ops_dir.is_dir() and run.raw_dir.is_dir()
    assert run.scenario_path.name == "scenario.yml"
    assert run.summary_path.name == "summary.json"
    assert run.faults_path.name == "faults.jsonl"
    assert run.timeline_path.name == "timeline.jsonl"
    assert run.report_path.name == "report.html"
    assert run.ops_path("w1") == run.path / "ops" / "w1.jsonl"
    assert run.agents_raw_dir == run.path / "raw" / "agents"
    assert run.servers_raw_dir == run.path / "raw" / "servers"


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    names = [RunDir.create(tmp_path, "demo", WHEN).id for _ in range(3)]
    assert names == ["20261201-090507-demo", "20261201-090507-demo-2", "20261201-090507-demo-3"]


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_names_that_would_leave_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(RunDirError, match="scenario name"):
        RunDir.create(tmp_path, name, WHEN)
    run = RunDir.create(tmp_path, "demo", WHEN)
    with pytest.raises(RunDirError, match="client name"):
        run.ops_path(name)


def test_write_summary_is_atomic_and_checked_against_the_schema(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "demo", WHEN)
    good = minimal_summary(run)
    run.write_summary(good)
    assert run.summary() == good
    bad = minimal_summary(run)
    bad["run"]["status"] = "fine"
    with pytest.raises(RunDirError, match=r"summary.json: run/status: 'fine' is not one of"):
        run.write_summary(bad)
    assert json.loads(run.summary_path.read_text()) == good  # the earlier summary is untouched
    assert sorted(p.name for p in run.path.iterdir()) == ["ops", "raw", "summary.json"]  # no temporary left


def test_a_client_figure_of_the_wrong_type_names_its_path(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "demo", WHEN)
    summary = minimal_summary(run)
    summary["clients"] = {"w1": {"attempted": 1, "ok": 1, "fail": 0, "unknown": "none"}}
    with pytest.raises(RunDirError, match=r"clients/w1/unknown: 'none' is not of type 'integer'"):
        run.write_summary(summary)


def test_appends_are_lines_and_a_line_cut_short_by_a_killed_writer_is_skipped(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "demo", WHEN)
    run.append_timeline({"t": 2.0, "source": "runner", "event": "primary", "detail": {"group": "redis", "host": "b"}})
    run.append_timeline({"t": 1.0, "source": "runner", "event": "primary", "detail": {"group": "redis", "host": "a"}})
    run.append_fault({"id": "f1", "kind": "kill", "target": "primary", "t_inject": 1.5})
    with run.faults_path.open("a") as out:
        out.write('{"id": "f2", "kind": "st')  # the runner died mid-line
    assert [e["detail"]["host"] for e in run.timeline()] == ["a", "b"]  # ordered by t
    assert [f["id"] for f in run.faults()] == ["f1"]


def test_a_bad_line_inside_a_file_names_file_and_line(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, "demo", WHEN)
    run.ops_path("w1").write_text('{"op": "write"}\nnot json\n{"op": "read"}\n')
    with pytest.raises(RunDirError, match=r"ops/w1.jsonl:2: not a JSON object"):
        list(run.ops("w1"))


def test_open_says_in_one_line_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"x: no such folder"):
        RunDir.open(tmp_path / "x")
    (tmp_path / "y").mkdir()
    with pytest.raises(RunDirError, match=r"y: no summary.json: not a kvtestbed run folder"):
        RunDir.open(tmp_path / "y")
    (tmp_path / "y" / "summary.json").write_text("{")
    with pytest.raises(RunDirError, match=r"summary.json: not valid JSON \(line 1"):
        RunDir.open(tmp_path / "y").summary()


def test_find_runs_lists_finished_runs_oldest_first(tmp_path: Path) -> None:
    later = make_run(tmp_path, "b", started=STARTED.replace(hour=11), duration_s=5, fault_at=2)
    earlier = make_run(tmp_path, "a", duration_s=5, fault_at=2)
    RunDir.create(tmp_path, "unfinished", WHEN)  # no summary.json yet
    (tmp_path / "compare-1.html").write_text("")
    assert [r.id for r in find_runs(tmp_path)] == [earlier.id, later.id]
    assert find_runs(tmp_path / "absent") == []
    assert earlier.clients() == ["quorum", "sentinel-default"]
