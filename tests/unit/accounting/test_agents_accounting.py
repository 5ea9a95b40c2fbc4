"""The agents check: when the agents' counts are final, and what they say was lost or duplicated per workload.

Summaries are shaped as the agents' /hdr endpoints return them (agents/kvagent/workloads/*/agent.py summary())."""

from __future__ import annotations

from typing import Any

from kvtestbed.accounting.agents import account_agents, drain_state
from kvtestbed.results.summary import flatten_figures


def _generator(audit: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    return "expiry", {"role": "generator", "done": audit is not None, "audit": audit}


def _requester(requests: int, completed: int, lost: int, in_flight: int, issued_all: bool,
               late: int = 0) -> tuple[str, dict[str, Any]]:
    return "streams", {"ingress": "direct", "requests": requests, "completed": completed, "lost": lost,
                       "in_flight": in_flight, "issued_all": issued_all, "late_responses": late, "retries": 2,
                       "processed": 0, "reclaimed": 0}


def _worker(processed: int, reclaimed: int) -> tuple[str, dict[str, Any]]:
    return "streams", {"ingress": "off", "requests": 0, "in_flight": 0, "issued_all": False,
                       "processed": processed, "reclaimed": reclaimed}


def _pipeline(published: int = 1000, pending: int = 0, distinct: int = 1000, twice: int = 0,
              done: bool = True) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "producer": ("pipeline", {"role": "producer", "published": published, "done": done, "retries": 3}),
        "high": ("pipeline", {"role": "route", "route": "high", "routed": 400, "duplicates": 5,
                              "pending": pending, "ack_pending": 0}),
        "low": ("pipeline", {"role": "route", "route": "low", "routed": 600, "duplicates": 0,
                             "pending": 0, "ack_pending": 0}),
        "audit": ("pipeline", {"role": "aggregator", "audit": {"distinct": distinct, "routed_twice": twice}}),
    }


def test_expiry_waits_for_the_generators_final_audit():
    busy = drain_state({"gen": _generator(None), "w": ("expiry", {"role": "worker"})})
    assert not busy.drained and "gen" in busy.waiting_for[0]
    audit = {"generated": 3500, "processed_keys": 3498, "lost": 2, "processed_twice": 7, "pending": 0,
             "per_worker": {"w1": 1200, "w2": 2305}}
    agents = {"gen": _generator(audit), "c1": ("expiry", {"role": "consumer", "received": 7000, "published": 3500,
                                                          "suppressed": 3500})}
    assert drain_state(agents).drained
    out = account_agents(agents)["expiry"]
    assert (out["keys"], out["lost"], out["duplicated"]) == (3500, 2, 7)
    assert out["per_worker"] == {"w1": 1200, "w2": 2305}
    assert out["per_consumer"]["c1"]["suppressed"] == 3500
    # engine-neutral totals: one consumer heard each key twice (two peers expired it)
    assert (out["received"], out["published"], out["suppressed"]) == (7000, 3500, 3500)
    assert out["events_per_key_per_consumer"] == 2.0


def test_streams_counts_unanswered_requests_as_lost_and_waits_for_the_driver():
    assert not drain_state({"req": _requester(10, 9, 0, 1, issued_all=True)}).drained
    assert not drain_state({"req": _requester(10, 10, 0, 0, issued_all=False)}).drained
    agents = {"req": _requester(6000, 5997, 2, 0, issued_all=True, late=4),
              "w1": _worker(3000, 0), "w2": _worker(3001, 12)}
    assert drain_state(agents).drained
    out = account_agents(agents)["streams"]
    assert (out["requests"], out["completed"], out["lost"], out["duplicated"]) == (6000, 5997, 2, 4)
    assert (out["processed"], out["reclaimed"]) == (6001, 12)
    assert out["per_worker"] == {"w1": 3000, "w2": 3001}


def test_an_http_ingress_never_blocks_the_drain_once_nothing_is_in_flight():
    http = ("streams", {"ingress": "http", "requests": 50, "completed": 50, "in_flight": 0, "issued_all": False})
    assert drain_state({"streams": http}).drained


def test_pipeline_lost_is_published_minus_the_ledgers_distinct_ids():
    agents = _pipeline(published=1000, distinct=996, twice=1)
    out = account_agents(agents)["pipeline"]
    assert (out["published"], out["stored"], out["lost"], out["duplicated"], out["redelivered"]) == (
        1000, 996, 4, 1, 5)
    assert out["per_route"] == {"high": 400, "low": 600}


def test_pipeline_drains_only_when_the_routes_are_empty_and_the_audit_is_steady():
    assert not drain_state(_pipeline(done=False)).drained
    assert not drain_state(_pipeline(pending=3)).drained
    # the aggregator polls the store a second behind: one poll is not enough, a moving audit is not steady
    assert not drain_state(_pipeline(distinct=990)).drained
    assert not drain_state(_pipeline(distinct=996), previous=_pipeline(distinct=990)).drained
    assert drain_state(_pipeline(distinct=996), previous=_pipeline(distinct=996)).drained


def test_observer_and_hotkeys_add_nothing_and_never_block():
    agents = {"observer-1": ("observer", {"writer": {"sent": 10}}), "hotkeys": ("hotkeys", {"phases": []})}
    assert drain_state(agents).drained
    assert account_agents(agents) == {}


def test_accounting_becomes_figures():
    summary = {"accounting": account_agents({"req": _requester(10, 10, 0, 0, issued_all=True)})}
    figures = flatten_figures(summary)
    assert figures["accounting.streams.lost"] == 0
    assert figures["accounting.streams.requests"] == 10
