"""What the report's plots show, computed from a run's files: per-client time series binned from the op logs,
latency CDFs cut down to a few thousand points, and who was primary when from the timeline.

Latency is measured from the op's *intended* start (t_intended) to its end, as Rally's "latency" and kvload's
open-loop pacing do: time a client spent stuck behind a slow op counts (no coordinated omission).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_BINS = 1500  # points per time series: 1 s bins up to 25 minutes, 3 s for an hour, 1 min for a day
MAX_CDF_POINTS = 1000
RESULTS = ("ok", "fail", "unknown")


@dataclass
class ClientSeries:
    """One client's ops, binned: bin start times (s since t0), per-bin latency p50/p99 (ms, ok ops only; None
    where a bin had none) and per-second rates of ok / fail / unknown completions; and its latency CDF."""

    name: str
    bin_s: float
    times: list[float] = field(default_factory=list)
    p50_ms: list[float | None] = field(default_factory=list)
    p99_ms: list[float | None] = field(default_factory=list)
    rates: dict[str, list[float]] = field(default_factory=dict)
    cdf_ms: list[float] = field(default_factory=list)
    cdf_fraction: list[float] = field(default_factory=list)
    ops: int = 0


def bin_width(duration_s: float) -> float:
    """Whole seconds, wide enough that a series has at most MAX_BINS points."""
    return float(max(1, math.ceil(duration_s / MAX_BINS)))


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of an ascending list that is not empty."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def cdf_points(sorted_values: list[float], max_points: int = MAX_CDF_POINTS) -> tuple[list[float], list[float]]:
    """The empirical CDF at no more than max_points evenly spaced ranks, always including the maximum."""
    n = len(sorted_values)
    if n == 0:
        return [], []
    step = max(1, n // max_points)
    ranks = list(range(step - 1, n, step))
    if ranks[-1] != n - 1:
        ranks.append(n - 1)
    return [sorted_values[r] for r in ranks], [(r + 1) / n for r in ranks]


def client_series(name: str, ops: Iterable[Mapping[str, Any]], duration_s: float) -> ClientSeries:
    """Bin one client's op log. An op counts where it ended (or, never ended, where it started)."""
    series = ClientSeries(name=name, bin_s=bin_width(duration_s))
    latencies_by_bin: dict[int, list[float]] = defaultdict(list)
    counts: dict[str, dict[int, int]] = {r: defaultdict(int) for r in RESULTS}
    every_latency: list[float] = []
    last_bin = 0
    for op in ops:
        t = op.get("t_end") if op.get("t_end") is not None else op.get("t_start")
        result = op.get("result")
        if t is None or result not in counts:
            continue
        series.ops += 1
        index = int(max(0.0, float(t)) // series.bin_s)
        last_bin = max(last_bin, index)
        counts[result][index] += 1
        if result == "ok" and op.get("t_end") is not None:
            begun = op.get("t_intended") if op.get("t_intended") is not None else op.get("t_start")
            if begun is not None:
                latency_ms = max(0.0, (float(op["t_end"]) - float(begun)) * 1000)
                latencies_by_bin[index].append(latency_ms)
                every_latency.append(latency_ms)
    if series.ops == 0:
        return series
    for index in range(last_bin + 1):
        series.times.append(index * series.bin_s)
        in_bin = sorted(latencies_by_bin.get(index, ()))
        series.p50_ms.append(percentile(in_bin, 50) if in_bin else None)
        series.p99_ms.append(percentile(in_bin, 99) if in_bin else None)
    for result in RESULTS:
        series.rates[result] = [counts[result].get(i, 0) / series.bin_s for i in range(last_bin + 1)]
    every_latency.sort()
    series.cdf_ms, series.cdf_fraction = cdf_points(every_latency)
    return series


@dataclass(frozen=True)
class PrimarySpan:
    group: str
    primary: str
    t_from: float
    t_to: float


def _host_names(inventory: Mapping[str, Any]) -> dict[str, str]:
    """address -> inventory host name, so that Sentinel's "198.18.0.12:6379" reads as pi-2."""
    hosts = (inventory or {}).get("hosts") or {}
    return {str(entry.get("address")): name for name, entry in hosts.items() if entry.get("address")}


def primary_spans(
    timeline: Iterable[Mapping[str, Any]], inventory: Mapping[str, Any], end_t: float
) -> list[PrimarySpan]:
    """Who was primary of each group when: from the runner's "primary" observations and the servers' own
    "+switch-master" events (Sentinel's name for the master is the group's). Consecutive reports of the same
    primary make one span; the last span lasts to end_t."""
    names = _host_names(inventory)
    current: dict[str, tuple[str, float]] = {}
    spans: list[PrimarySpan] = []
    for event in sorted(timeline, key=lambda e: float(e.get("t", 0.0))):
        detail = event.get("detail") or {}
        if event.get("event") == "primary":
            group, primary = detail.get("group"), detail.get("host")
        elif event.get("event") == "+switch-master":
            group, address = detail.get("master"), str(detail.get("to") or "")
            primary = names.get(address) or names.get(address.rsplit(":", 1)[0]) or address
        else:
            continue
        if not group or not primary:
            continue
        t = float(event["t"])
        previous = current.get(group)
        if previous and previous[0] == primary:
            continue
        if previous:
            spans.append(PrimarySpan(group, previous[0], previous[1], t))
        current[group] = (primary, t)
    spans.extend(PrimarySpan(group, primary, t, max(t, end_t)) for group, (primary, t) in current.items())
    return sorted(spans, key=lambda s: (s.group, s.t_from))


def consumer_figures(figures: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """load.consumer.<name>[.<metric>] figures as metric -> {consumer: value} ("" for a bare load.consumer.<name>)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for name, value in figures.items():
        if name.startswith("load.consumer."):
            consumer, _, metric = name.removeprefix("load.consumer.").partition(".")
            out[metric][consumer] = value
        elif name.startswith("accounting."):
            # the agents check's spreads: accounting.<workload>.per_<worker|consumer|route>.<name>[.<metric>]
            parts = name.split(".")
            if len(parts) >= 4 and parts[2].startswith("per_"):
                out[".".join([parts[1], parts[2], *parts[4:]])][parts[3]] = value
    return dict(out)


def loss_figures(figures: Mapping[str, float]) -> dict[str, float]:
    """load.* figures that count lost or duplicated events (the agents' and Locust's checks)."""
    words = ("lost", "dup", "missing", "unexpected")
    return {n: v for n, v in figures.items() if n.startswith("load.") and any(w in n for w in words)}


def accounting_rows(accounting: Mapping[str, Any]) -> list[tuple[str, float | None, float | None, str]]:
    """summary.accounting (the agents check) as (workload, lost, duplicated, the other counts in words)."""
    rows = []
    for workload, entry in sorted(accounting.items()):
        if not isinstance(entry, Mapping):
            continue
        others = ", ".join(f"{k} {v:g}" for k, v in entry.items()
                           if k not in ("lost", "duplicated") and isinstance(v, int | float))  # fmt: skip
        rows.append((workload, entry.get("lost"), entry.get("duplicated"), others))
    return rows
