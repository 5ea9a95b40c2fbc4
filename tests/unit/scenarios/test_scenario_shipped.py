"""The scenario files shipped in scenarios/ load, say what the issue asks of them, and are documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvtestbed.scenarios import load_scenario

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_loads_and_is_listed_in_the_readme(path):
    scenarios = load_scenario(path)
    assert scenarios and all(s.name == path.stem for s in scenarios)
    assert f"`{path.name}`" in (ROOT / "scenarios/README.md").read_text()


def test_demo_is_a_short_sentinel_kill():
    (demo,) = load_scenario(ROOT / "scenarios/demo.yml")
    assert demo.warmup_s + demo.duration_s <= 120  # leaves the 5 minutes room for the checks and the report
    assert {w.strategy for w in demo.writers} == {"redis-py", "quorum"}
    assert all(100 <= w.rate <= 200 for w in demo.writers)
    assert [(f.kind, f.group, f.target, f.at_s) for f in demo.faults] == [("kill", "redis", "primary", 15.0)]
    # the killed primary is back (Restart=) and the measurement sees the new primary before the run ends
    assert demo.faults[0].at_s + (demo.faults[0].for_s or 0) < demo.duration_s
    assert [str(s) for s in demo.slo] == ["clients.*.lost == 0"]


def test_sentinel_partition_holds_the_quorum_writer_to_its_availability():
    (run,) = load_scenario(ROOT / "scenarios/sentinel-partition.yml")
    (fault,) = run.faults
    assert (fault.kind, fault.target, fault.for_s, fault.params["shape"]) == ("partition", "primary", 30.0, "isolate")
    assert {w.strategy for w in run.writers} == {"redis-py", "quorum"}
    quorum = next(w.name for w in run.writers if w.strategy == "quorum")
    # losses are reported, not held to zero (an isolated primary's acknowledged writes are lost after the heal)
    assert [str(s) for s in run.slo] == [f"clients.{quorum}.unavailability_s <= 10"]
