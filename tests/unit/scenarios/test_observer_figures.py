"""Engine-neutral observer figures: listeners of one mode merged across agent processes."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

from kvtestbed.scenarios.observer_figures import ObserverPayload, listener_modes, observer_figures


def _encoded(*values_us: int) -> str:
    hist = HdrHistogram(1, 60_000_000, 3)
    for value in values_us:
        hist.record_value(value)
    return hist.encode().decode("ascii")


def _listener(name: str, mode: str, latencies: list[int], coalesced: int) -> ObserverPayload:
    summary = {"writer": {"enabled": False, "writes": 0},
               "listeners": {name: {"notifications": len(latencies), "versions": len(latencies) - coalesced,
                                    "coalesced": coalesced, "missed": 0, "duplicates": 1, "stale_reads": 0}}}
    return ObserverPayload(summary, {"kvt_observer_notify_latency": {f"listener={name}": _encoded(*latencies)}},
                           {"listeners": [{"name": name, "mode": mode}]})


def test_listeners_of_one_mode_merge_across_processes_and_writers_give_round_trips() -> None:
    writer = ObserverPayload(
        {"writer": {"enabled": True, "writes": 4}, "listeners": {}},
        {"kvt_observer_rtt": {"listener=a-sync": _encoded(900, 900), "listener=b-async": _encoded(300, 300)}},
        {"listeners": []},
    )
    figures = observer_figures([
        writer,
        _listener("a-sync", "sync", [100, 100, 100, 100], 1),
        _listener("c-sync", "sync", [1000, 1000, 1000, 1000], 2),
        _listener("b-async", "async", [50, 50], 0),
    ])
    assert figures["observer.writes"] == 4
    assert figures["observer.sync.listeners"] == 2 and figures["observer.async.listeners"] == 1
    assert figures["observer.sync.coalesced"] == 3 and figures["observer.sync.duplicates"] == 2
    # merged histograms, not averaged percentiles: 8 values, half at 100 and half at 1000 us
    assert figures["observer.sync.notify_latency.count"] == 8
    assert figures["observer.sync.notify_latency.p50_us"] == 100
    assert 999 <= figures["observer.sync.notify_latency.p99_us"] <= 1001
    assert figures["observer.async.notify_latency.p50_us"] == 50
    assert 899 <= figures["observer.sync.rtt.p50_us"] <= 901 and figures["observer.async.rtt.count"] == 2


def test_modes_follow_copies_and_the_default_pair() -> None:
    assert listener_modes({"listeners": [{"name": "x", "mode": "sync", "copies": 3}]}) == {
        "x": "sync", "x-2": "sync", "x-3": "sync"}
    assert listener_modes({}) == {"sync": "sync", "async": "async"}
    assert observer_figures([]) == {}
