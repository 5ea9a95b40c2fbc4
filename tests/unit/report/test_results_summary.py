"""Flat figures from a nested summary, SLO evaluation (wildcards take the worst client), and which way is better.

Summaries are written by hand or generated (tests/support/run_folders.py): the code under test only reads them.
"""

from __future__ import annotations

from typing import Any

import pytest

from kvtestbed.results.summary import (
    complete_summary,
    evaluate_slos,
    figure_direction,
    flatten_figures,
    slo_figure_problem,
)

SUMMARY: dict[str, Any] = {
    "schema": 1,
    "run": {"id": "r", "scenario": "s", "started": "x", "status": "passed", "duration_s": 60.5},
    "faults": [{"id": "f1"}, {"id": "f2"}],
    "clients": {
        "w1": {
            "strategy": "redis-py",
            "attempted": 100,
            "ok": 90,
            "lost": 3,
            "lost_sample": ["k1"],
            "unavailability_window": [20.0, 26.0],
            "failover_s": None,
            "latency_us": {"p50": 800, "p99.9": 5000},
        },
        "w2": {"attempted": 100, "ok": 99, "lost": 0, "failover_s": 4.25, "latency_us": {"p50": 700}},
    },
    "load": {"observer_p50_ms": 1.5, "consumer": {"c1": 10, "c2": 12}, "engine": "redis", "ok": True},
}


def test_flatten_names_every_number_by_its_dotted_path() -> None:
    figures = flatten_figures(SUMMARY)
    assert figures == {
        "clients.w1.attempted": 100,
        "clients.w1.ok": 90,
        "clients.w1.lost": 3,
        "clients.w1.latency_us.p50": 800,
        "clients.w1.latency_us.p99.9": 5000,
        "clients.w2.attempted": 100,
        "clients.w2.ok": 99,
        "clients.w2.lost": 0,
        "clients.w2.failover_s": 4.25,
        "clients.w2.latency_us.p50": 700,
        "load.observer_p50_ms": 1.5,
        "load.consumer.c1": 10,
        "load.consumer.c2": 12,
        "faults.count": 2,
        "run.duration_s": 60.5,
    }  # strings, lists, booleans and nulls (no failover seen) are not figures


def test_an_slo_on_every_client_takes_the_worst_and_names_it() -> None:
    figures = flatten_figures(SUMMARY)
    slos = evaluate_slos(
        [
            {"figure": "clients.*.lost", "op": "<=", "threshold": 0},
            {"figure": "clients.*.ok", "op": ">=", "threshold": 95},
            {"figure": "clients.*.latency_us.p50", "op": "<", "threshold": 1000},
        ],
        figures,
    )
    assert slos == [
        {"figure": "clients.*.lost", "op": "<=", "threshold": 0, "value": 3, "ok": False, "worst": "clients.w1.lost"},
        {"figure": "clients.*.ok", "op": ">=", "threshold": 95, "value": 90, "ok": False, "worst": "clients.w1.ok"},
        {
            "figure": "clients.*.latency_us.p50",
            "op": "<",
            "threshold": 1000,
            "value": 800,
            "ok": True,
            "worst": "clients.w1.latency_us.p50",
        },
    ]


def test_a_wildcard_matches_one_path_segment_only() -> None:
    figures = {"clients.w1.latency_us.p99": 9.0, "clients.w1.latency_us.p99.9": 50.0}
    [slo] = evaluate_slos([{"figure": "clients.*.latency_us.p99", "op": "<=", "threshold": 10}], figures)
    assert slo["ok"] and slo["worst"] == "clients.w1.latency_us.p99"


def test_a_figure_the_run_did_not_produce_fails_its_slo() -> None:
    figures = flatten_figures(SUMMARY)
    slos = evaluate_slos(
        [
            {"figure": "clients.w1.failover_s", "op": "<=", "threshold": 10},  # null: no failover seen
            {"figure": "clients.*.unexpected", "op": "==", "threshold": 0},
        ],
        figures,
    )
    assert [(s["value"], s["ok"]) for s in slos] == [(None, False), (None, False)]
    assert slos[1]["worst"] is None


def test_equality_reports_the_first_client_that_differs() -> None:
    figures = {"clients.a.lost": 0.0, "clients.b.lost": 2.0, "clients.c.lost": 0.0}
    [slo] = evaluate_slos([{"figure": "clients.*.lost", "op": "==", "threshold": 0}], figures)
    assert (slo["ok"], slo["value"], slo["worst"]) == (False, 2.0, "clients.b.lost")


def test_an_unknown_operator_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown operator '=<'"):
        evaluate_slos([{"figure": "faults.count", "op": "=<", "threshold": 1}], {"faults.count": 1})


def test_complete_summary_fills_figures_and_slo_and_marks_a_violation() -> None:
    summary = {**SUMMARY, "run": dict(SUMMARY["run"])}
    complete_summary(summary, [{"figure": "clients.*.lost", "op": "<=", "threshold": 0}])
    assert summary["figures"]["faults.count"] == 2
    assert summary["run"]["status"] == "slo-violated"
    failed = {**SUMMARY, "run": {**SUMMARY["run"], "status": "failed"}}
    complete_summary(failed, [{"figure": "clients.*.lost", "op": "<=", "threshold": 0}])
    assert failed["run"]["status"] == "failed"  # a failed run stays failed


@pytest.mark.parametrize(
    ("figure", "problem"),
    [
        ("clients.*.lost", None),
        ("clients.w1.latency_us.p99.9", None),
        ("load.anything", None),
        ("faults.count", None),
        ("clients.nobody.lost", "no client named 'nobody'"),
        ("clients.*.lots", "unknown client figure 'lots'"),
        ("client.w1.lost", "unknown figure"),
        ("load.", "unknown figure"),
    ],
)
def test_slo_figures_are_checked_before_a_run(figure: str, problem: str | None) -> None:
    found = slo_figure_problem(figure, ["w1", "w2"])
    assert (found is None) if problem is None else (found is not None and problem in found), found


@pytest.mark.parametrize(
    ("figure", "direction"),
    [
        ("clients.w1.latency_us.p99", "lower"),
        ("clients.w1.lost", "lower"),
        ("clients.w1.unavailability_s", "lower"),
        ("clients.w1.failover_s", "lower"),
        ("clients.w1.unknown", "lower"),
        ("clients.w1.ops_per_s", "higher"),
        ("clients.w1.ok", "higher"),
        ("clients.w1.attempted", None),
        ("run.duration_s", None),
        ("faults.count", None),
        ("load.consumer.c1", None),
    ],
)
def test_direction_says_which_way_is_better(figure: str, direction: str | None) -> None:
    assert figure_direction(figure) == direction
