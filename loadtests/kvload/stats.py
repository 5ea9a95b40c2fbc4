"""Request statistics: an HdrHistogram per request name (integer µs) beside Locust's own table.

Why not fire Locust's `request` event per request: at the rates a shared, auto-pipelined connection reaches on one
core, the event plus Locust's per-request StatsEntry.log halved throughput (measured on this 2-core machine kind,
redis-server and client each on a CPU, 200 users over 50 connections: 95.5k GET/s without per-request events,
44.6k/s with them). So successes are counted here and handed to Locust's StatsEntry in bulk every FLUSH_S; failures
(rare, and worth their message) still go through the event so Locust's failure table shows them.

Locust's table: `locust.stats.bucket_response_time` is replaced (on master and workers: both import this module)
so that times below 10 ms keep two significant digits instead of whole milliseconds.

Distributed: each worker adds the histograms recorded since its last report to Locust's report_to_master payload;
the master merges them (`worker_report`) into one HdrStore per environment, served as JSON on /hdr.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import gevent
import locust.stats
from hdrh.histogram import HdrHistogram
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

# 1 µs .. 60 s at 3 significant figures: every value below 1 ms is exact to the microsecond
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 60_000_000
HDR_DIGITS = 3
FLUSH_S = 0.2
REPORT_KEY = "kvt_hdr"
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_DIGITS)


def fine_bucket(response_time_ms: float) -> float:
    """Locust's response-time bucket, with two significant digits below 10 ms (Locust keeps whole ms below 100)."""
    if response_time_ms < 1:
        return round(response_time_ms, 2)
    if response_time_ms < 10:
        return round(response_time_ms, 1)
    if response_time_ms < 100:
        return round(response_time_ms)
    if response_time_ms < 1000:
        return int(round(response_time_ms, -1))
    if response_time_ms < 10000:
        return int(round(response_time_ms, -2))
    return int(round(response_time_ms, -3))


# Locust looks the function up at call time (StatsEntry._log_response_time): replacing it here covers the table,
# the charts and the CSV/HTML reports in every process that imports kvload.
locust.stats.bucket_response_time = fine_bucket  # type: ignore[assignment]


def summarize(h: HdrHistogram) -> dict[str, Any]:
    """The agents' /hdr shape: count and percentiles in integer µs."""
    if h.get_total_count() == 0:
        return {"count": 0}
    out: dict[str, Any] = {
        "count": h.get_total_count(),
        "min_us": h.get_min_value(),
        "mean_us": round(h.get_mean_value(), 1),
        "max_us": h.get_max_value(),
    }
    for p, v in h.get_percentile_to_value_dict(list(PERCENTILES)).items():
        out[f"p{p:g}_us"] = v
    return out


class HdrStore:
    """Cumulative histograms per "<type> <name>" for one run (master or local runner); reset when a run starts."""

    def __init__(self) -> None:
        self.latency: dict[str, HdrHistogram] = {}
        self.lag: dict[str, HdrHistogram] = {}
        self.started = time.time()

    def reset(self) -> None:
        self.latency.clear()
        self.lag.clear()
        self.started = time.time()

    def add(self, kind: str, key: str, h: HdrHistogram) -> None:
        target = self.latency if kind == "latency" else self.lag
        into = target.get(key)
        if into is None:
            into = target[key] = new_histogram()
        into.add(h)

    def add_encoded(self, payload: dict[str, dict[str, str]]) -> None:
        for kind, blobs in payload.items():
            for key, blob in blobs.items():
                h = new_histogram()
                h.decode_and_add(blob)
                self.add(kind, key, h)

    def as_json(self) -> dict[str, Any]:
        total = new_histogram()
        for h in self.latency.values():
            total.add(h)
        return {
            "unit": "us",
            "since": self.started,
            "requests": {k: summarize(h) for k, h in sorted(self.latency.items())},
            "aggregated": summarize(total),
            # open loop: how late each send left against its intended time (a saturated generator shows here)
            "send_lag": {k: summarize(h) for k, h in sorted(self.lag.items())},
        }


@dataclass
class _Batch:
    """Successes of one request name since the last flush into Locust's table."""

    count: int = 0
    total_us: int = 0
    length: int = 0
    # count per latency in whole µs; into the HdrHistogram and Locust's buckets at flush, once per distinct value:
    # HdrHistogram.record_value is Python (~1.5 µs a call, 16 % of a depth-16 GET run's profile), a dict increment
    # is not; and iterating an HdrHistogram in Python took 30 ms for 700 distinct values (a 30 ms stall of the
    # gevent loop is a 30 ms send lag for every user), so Locust's buckets come from this dict too
    values: dict[int, int] = field(default_factory=dict)


class Recorder:
    """Records requests of one Locust process. Users call success()/failure(); get one with recorder(env)."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.store = HdrStore()
        self._batches: dict[tuple[str, str], _Batch] = defaultdict(_Batch)
        # histograms recorded since the last report to the master (workers) or merge into the store (local)
        self._interval: dict[str, HdrHistogram] = {}
        self._interval_lag: dict[str, HdrHistogram] = {}
        self._flusher: gevent.Greenlet | None = None
        events = environment.events
        events.test_start.add_listener(self._on_test_start)
        events.test_stop.add_listener(lambda **_: self.flush())
        events.reset_stats.add_listener(self._on_reset)
        events.report_to_master.add_listener(self._on_report_to_master)
        events.worker_report.add_listener(self._on_worker_report)

    # -- the hot path ------------------------------------------------------------------------------------
    def success(self, request_type: str, name: str, latency_ns: int, length: int = 0, count: int = 1) -> None:
        """`count` requests of one kind that completed together (a pipeline of depth `count`) in latency_ns."""
        us = latency_ns // 1000
        if us < HDR_LOWEST_US:
            us = HDR_LOWEST_US
        elif us > HDR_HIGHEST_US:
            us = HDR_HIGHEST_US
        b = self._batches[(request_type, name)]
        b.count += count
        b.total_us += us * count
        b.length += length
        values = b.values
        values[us] = values.get(us, 0) + count
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush_loop)

    def failure(self, request_type: str, name: str, latency_ns: int, exc: BaseException | str, count: int = 1) -> None:
        exception = exc if isinstance(exc, BaseException) else RuntimeError(exc)
        for _ in range(count):
            self.environment.events.request.fire(
                request_type=request_type,
                name=name,
                response_time=latency_ns / 1e6,
                response_length=0,
                exception=exception,
                context={},
            )

    def lag(self, request_type: str, name: str, lag_ns: int) -> None:
        """Open loop: actual send time minus intended send time."""
        key = f"{request_type} {name}"
        h = self._interval_lag.get(key)
        if h is None:
            h = self._interval_lag[key] = new_histogram()
        h.record_value(min(max(lag_ns // 1000, HDR_LOWEST_US), HDR_HIGHEST_US))

    # -- into Locust's table -----------------------------------------------------------------------------
    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(FLUSH_S)
            self.flush()

    def flush(self) -> None:
        if not self._batches:
            return
        batches, self._batches = self._batches, defaultdict(_Batch)
        stats = self.environment.stats
        now = time.time()
        for (request_type, name), b in batches.items():
            buckets: dict[float, int] = defaultdict(int)
            for us, n in b.values.items():
                buckets[fine_bucket(_bucket_us(us) / 1000)] += n
            for entry in (stats.get(name, request_type), stats.total):
                _bulk_log(entry, b, buckets, now)
            key = f"{request_type} {name}"
            h = self._interval.get(key)
            if h is None:
                h = self._interval[key] = new_histogram()
            for us, n in b.values.items():
                h.record_value(us, n)
        if not isinstance(self.environment.runner, WorkerRunner):
            self._merge_interval_into(self.store)

    def _merge_interval_into(self, store: HdrStore) -> None:
        for key, h in self._interval.items():
            store.add("latency", key, h)
        for key, h in self._interval_lag.items():
            store.add("lag", key, h)
        self._interval.clear()
        self._interval_lag.clear()

    # -- events ------------------------------------------------------------------------------------------
    def _on_test_start(self, **_: Any) -> None:
        self.flush()
        self._batches.clear()
        self._interval.clear()
        self._interval_lag.clear()
        self.store.reset()

    def _on_reset(self, **_: Any) -> None:
        self._on_test_start()

    def _on_report_to_master(self, client_id: str, data: dict[str, Any]) -> None:
        self.flush()
        payload = {
            "latency": {k: h.encode() for k, h in self._interval.items()},
            "lag": {k: h.encode() for k, h in self._interval_lag.items()},
        }
        self._interval.clear()
        self._interval_lag.clear()
        data[REPORT_KEY] = payload

    def _on_worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        if isinstance(self.environment.runner, MasterRunner) and REPORT_KEY in data:
            self.store.add_encoded(data[REPORT_KEY])


def _bulk_log(entry: locust.stats.StatsEntry, b: _Batch, buckets: dict[float, int], now: float) -> None:
    """StatsEntry.log for b.count requests at once (same fields, same order, locust 2.43-2.47)."""
    t = int(now)
    if entry.use_response_times_cache and entry.last_request_timestamp and t > int(entry.last_request_timestamp):
        entry._cache_response_times(t - 1)
    entry.num_requests += b.count
    entry.num_reqs_per_sec[t] += b.count
    entry.last_request_timestamp = now
    entry.total_content_length += b.length
    # response times in ms as Locust keeps them; buckets from the histogram's distinct values, not per request
    entry.total_response_time += b.total_us / 1000
    lo = min(b.values) / 1000
    hi = max(b.values) / 1000
    entry.min_response_time = lo if entry.min_response_time is None else min(entry.min_response_time, lo)
    entry.max_response_time = max(entry.max_response_time, hi)
    for bucket, n in buckets.items():
        entry.response_times[bucket] += n


def _bucket_us(us: int) -> int:
    """Two significant digits in integer µs (fine_bucket's steps), cheap enough for every request."""
    if us < 1000:
        return (us + 5) // 10 * 10
    if us < 10_000:
        return (us + 50) // 100 * 100
    if us < 100_000:
        return (us + 500) // 1000 * 1000
    if us < 1_000_000:
        return (us + 5000) // 10_000 * 10_000
    return (us + 50_000) // 100_000 * 100_000


def recorder(environment: Environment) -> Recorder:
    """The environment's recorder, made on first use (one per Locust process, no module-level state)."""
    rec = getattr(environment, "kvt_recorder", None)
    if rec is None:
        rec = Recorder(environment)
        environment.kvt_recorder = rec  # type: ignore[attr-defined]
    return rec
