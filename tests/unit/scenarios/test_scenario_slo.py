"""SLOs against a run's figures: clients.* means every client; a figure the run lacks never passes."""

from __future__ import annotations

import pytest

from kvtestbed.scenarios import ScenarioError, Slo, load_scenario
from kvtestbed.scenarios.values import seconds

FIGURES = {"clients.a.lost": 0, "clients.b.lost": 3, "clients.a.latency_us.p99.9": 900, "clients.b.failover_s": None,
           "faults.count": 1}


def test_wildcard_expands_to_every_client():
    entries = Slo("clients.*.lost", "==", 0).evaluate(FIGURES)
    assert [(e["figure"], e["value"], e["ok"]) for e in entries] == [("clients.a.lost", 0, True),
                                                                     ("clients.b.lost", 3, False)]


def test_a_field_with_a_dot_in_its_name():
    (entry,) = Slo("clients.*.latency_us.p99.9", "<=", 1000).evaluate(FIGURES)
    assert (entry["figure"], entry["ok"]) == ("clients.a.latency_us.p99.9", True)


@pytest.mark.parametrize("figure", ["clients.b.failover_s", "load.rps", "clients.*.ops_per_s"])
def test_a_missing_figure_fails(figure):
    (entry,) = Slo(figure, "<=", 15).evaluate(FIGURES)
    assert (entry["value"], entry["ok"]) == (None, False)


def test_both_spellings_parse_to_the_same_slo(valid, write_scenario):
    valid["slo"] = ["clients.w2.failover_s<=15", {"figure": "clients.w2.failover_s", "op": "<=", "threshold": 15},
                    "load.kvload.requests_per_s >= 90.5", "run.duration_s > 0", "faults.count == 2"]
    (scenario,) = load_scenario(write_scenario(valid))
    assert [str(s) for s in scenario.slo] == ["clients.w2.failover_s <= 15", "clients.w2.failover_s <= 15",
                                              "load.kvload.requests_per_s >= 90.5", "run.duration_s > 0",
                                              "faults.count == 2"]


@pytest.mark.parametrize(("given", "expected"), [(30, 30.0), (2.5, 2.5), ("30s", 30.0), ("2m", 120.0),
                                                 ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("45", 45.0)])
def test_durations(given, expected):
    assert seconds(given, ("duration",)) == expected


def test_an_accounting_figure_needs_the_agents_check(valid, write_scenario):
    valid["slo"] = ["accounting.streams.lost == 0"]
    valid["checks"] = []
    with pytest.raises(ScenarioError, match=r"slo\[0\].*add 'agents' to checks"):
        load_scenario(write_scenario(valid))
    valid["checks"] = ["agents"]
    (scenario,) = load_scenario(write_scenario(valid))
    assert [str(s) for s in scenario.slo] == ["accounting.streams.lost == 0"]
