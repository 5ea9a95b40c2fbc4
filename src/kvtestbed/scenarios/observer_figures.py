"""Engine-neutral figures of the observer workload: every listener of one mode (sync or asyncio) merged, whichever
agent process it lives in.

Seed 003 runs each listener in an agent of its own, named after its engine and node (s3-keydb-pi-2-sync), so the
per-agent figures of a KeyDB run and a Redis run never share a name and a comparison cannot set them side by side.
These figures can: `observer.<mode>.notify_latency.p50_us` is the one-way latency of every <mode> listener of the
run, from their HdrHistograms merged (not an average of percentiles), `observer.<mode>.rtt.*` the writers' round
trips to those listeners, and the coalesced, missed and duplicated versions summed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

# the agents' LatencyMetric: microseconds, 3 significant digits (kvagent/service/metrics.py)
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 60_000_000, 3
_COUNTS = ("notifications", "versions", "coalesced", "missed", "duplicates", "stale_reads")
_LATENCIES = {"notify_latency": "kvt_observer_notify_latency", "read_latency": "kvt_observer_read_latency"}


@dataclass(frozen=True)
class ObserverPayload:
    summary: Mapping[str, Any]  # the agent's /hdr summary
    histograms: Mapping[str, Mapping[str, str]]  # metric -> label set -> base64 HdrHistogram
    config: Mapping[str, Any]  # the agent's config (its listeners' modes)


def listener_modes(config: Mapping[str, Any]) -> dict[str, str]:
    """Listener name -> mode, with `copies` expanded the way the agent names them (name, name-2, ...)."""
    listeners = config.get("listeners")
    if listeners is None:  # the agent's default: a sync and an async listener on the writer's node
        return {"sync": "sync", "async": "async"}
    modes: dict[str, str] = {}
    for listener in listeners if isinstance(listeners, list) else []:
        name, mode = str(listener.get("name", "")), str(listener.get("mode", "async"))
        for i in range(1, int(listener.get("copies", 1) or 1) + 1):
            modes[name if i == 1 else f"{name}-{i}"] = mode
    return modes


def _histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


def _stats(prefix: str, hist: HdrHistogram) -> dict[str, float]:
    if hist.get_total_count() == 0:
        return {}
    return {
        f"{prefix}.count": float(hist.get_total_count()),
        f"{prefix}.p50_us": float(hist.get_value_at_percentile(50)),
        f"{prefix}.p99_us": float(hist.get_value_at_percentile(99)),
        f"{prefix}.p999_us": float(hist.get_value_at_percentile(99.9)),
        f"{prefix}.max_us": float(hist.get_max_value()),
    }


def observer_figures(payloads: Iterable[ObserverPayload]) -> dict[str, float]:
    payloads = list(payloads)
    modes: dict[str, str] = {}
    for payload in payloads:
        modes.update(listener_modes(payload.config))
    merged: dict[tuple[str, str], HdrHistogram] = {}
    counts: dict[str, dict[str, float]] = {}
    writes = 0.0

    def add(mode: str, what: str, encoded: str) -> None:
        merged.setdefault((mode, what), _histogram()).decode_and_add(encoded)

    for payload in payloads:
        writer = payload.summary.get("writer") or {}
        if writer.get("enabled"):
            writes += float(writer.get("writes", 0))
        for name, listener in (payload.summary.get("listeners") or {}).items():
            mode = modes.get(name, "unknown")
            bucket = counts.setdefault(mode, dict.fromkeys(_COUNTS, 0.0))
            for key in _COUNTS:
                bucket[key] += float(listener.get(key, 0) or 0)
        for what, metric in {**_LATENCIES, "rtt": "kvt_observer_rtt"}.items():
            for label, encoded in (payload.histograms.get(metric) or {}).items():
                name = label.removeprefix("listener=")
                add(modes.get(name, "unknown"), what, encoded)

    figures: dict[str, float] = {"observer.writes": writes} if payloads else {}
    for mode, bucket in counts.items():
        figures[f"observer.{mode}.listeners"] = float(sum(1 for m in modes.values() if m == mode))
        for key, value in bucket.items():
            figures[f"observer.{mode}.{key}"] = value
    for (mode, what), hist in sorted(merged.items()):
        figures.update(_stats(f"observer.{mode}.{what}", hist))
    return figures
