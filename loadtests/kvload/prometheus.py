"""Locust's figures for Prometheus: GET /metrics on the master's web UI, behind the web UI's login.

Prometheus scrapes with basic auth (the web UI's user and password, kvload.webauth); a browser logged in to the web UI
may read it too; with no login configured it is as open as the rest of the web UI.

Names and labels are those of the community exporter (ContainerSolutions/locust_exporter), so dashboards written for
it read these too: `locust_users`, `locust_running`, `locust_workers_count`, `locust_requests_*{method,name}` (the
"Aggregated" row is method="" name="Aggregated", as there), `locust_errors{method,name,error}`, ... Response times are
in milliseconds as Locust keeps them (the exporter's unit); the request counts are gauges there, so they are gauges
here (they restart from 0 when a run starts). kvload adds `locust_state{state}` (1 for Locust's current state) and
the HdrHistograms of kvload.stats as `kvt_locust_hdr_*` in seconds: exact to the µs where Locust's table rounds.

Everything is computed from the runner's statistics when Prometheus scrapes (a collector, no thread or greenlet of its
own). The HdrHistogram percentiles cost well under a millisecond per request name; their mean is left out (computing
it walks every bucket in Python: ~35 ms each, a stall of the gevent loop on every scrape).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import locust.stats
from flask import Response, request
from flask_login import current_user
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from kvload.stats import PERCENTILES, recorder

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# kvload.webauth sets this attribute of the WebUI to its check of a user name and password (constant time); the
# name is shared by convention, not by import (webauth imports kvload.plugin, which imports this module)
CREDENTIALS_CHECK = "kvt_credentials_ok"
REALM = "kvtestbed locust"
# as Locust's own /stats/requests: a locustfile naming every URL apart cannot blow up a scrape
MAX_ROWS = 500
# Locust's states (locust.runners STATE_*), each a series of locust_state
STATES = ("ready", "spawning", "running", "cleanup", "stopping", "stopped", "missing")
# locust_running as the exporter counts: 0 stopped (or any other state), 1 hatching (Locust's spawning), 2 running
RUNNING = {"spawning": 1, "running": 2}
REFUSAL_LOG_EVERY_S = 60.0

Row = locust.stats.StatsEntry


def _ms(value: float | None) -> float:
    return math.nan if value is None else float(value)


class LocustCollector(Collector):
    """The families of one Locust environment (master or local runner), built afresh at each collect()."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def collect(self) -> Iterator[Metric]:
        runner = self.environment.runner
        if runner is None or isinstance(runner, WorkerRunner):
            return
        rec = recorder(self.environment)
        if not isinstance(runner, MasterRunner):
            # a local runner's recorder holds what its users did since the last flush (kvload.stats): into Locust's
            # table and the HdrHistograms first, so both tell the same moment; a master's come with worker reports
            rec.flush()
        yield from self._runner(runner)
        yield from self._requests(runner.stats)
        yield from self._errors(runner.stats)
        yield from self._hdr()

    # -- the run and its workers -------------------------------------------------------------------------------
    def _runner(self, runner: Any) -> Iterator[Metric]:
        state = str(runner.state)
        yield GaugeMetricFamily("locust_users", "Users running now (on every worker).", value=runner.user_count)
        yield GaugeMetricFamily(
            "locust_running",
            "The run's state: 0 stopped (or ready), 1 spawning, 2 running.",
            value=RUNNING.get(state, 0),
        )
        states = GaugeMetricFamily("locust_state", "1 for Locust's current state, 0 for the others.", labels=["state"])
        for name in STATES if state in STATES else (*STATES, state):
            states.add_metric([name], 1 if name == state else 0)
        yield states

        workers = list(runner.clients.values()) if isinstance(runner, MasterRunner) else []
        by_state = {s: sum(1 for w in workers if w.state == s) for s in ("running", "spawning", "missing")}
        connected = runner.worker_count if isinstance(runner, MasterRunner) else 0
        yield GaugeMetricFamily(
            "locust_workers_count", "Workers connected (ready, spawning or running).", value=connected
        )
        yield GaugeMetricFamily("locust_workers_running_count", "Workers running users.", value=by_state["running"])
        yield GaugeMetricFamily(
            "locust_workers_hatching_count", "Workers spawning users (Locust's spawning).", value=by_state["spawning"]
        )
        yield GaugeMetricFamily(
            "locust_workers_missing_count", "Workers whose heartbeats stopped.", value=by_state["missing"]
        )
        detail = GaugeMetricFamily(
            "locust_worker_detail", "Users of each worker, by its state.", labels=["id", "state"]
        )
        for worker in workers:
            detail.add_metric([str(worker.id), str(worker.state)], worker.user_count)
        yield detail

    # -- Locust's request table --------------------------------------------------------------------------------
    def _requests(self, stats: locust.stats.RequestStats) -> Iterator[Metric]:
        labels = ["method", "name"]
        num_requests = GaugeMetricFamily(
            "locust_requests_num_requests", "Requests counted since the run started.", labels=labels
        )
        num_failures = GaugeMetricFamily(
            "locust_requests_num_failures", "Failed requests since the run started.", labels=labels
        )
        current_rps = GaugeMetricFamily(
            "locust_requests_current_rps", "Requests per second over the last ~10 s.", labels=labels
        )
        current_fail = GaugeMetricFamily(
            "locust_requests_current_fail_per_sec", "Failures per second over the last ~10 s.", labels=labels
        )
        avg = GaugeMetricFamily(
            "locust_requests_avg_response_time", "Mean response time since the run started, ms.", labels=labels
        )
        median = GaugeMetricFamily(
            "locust_requests_median_response_time", "Median response time since the run started, ms.", labels=labels
        )
        minimum = GaugeMetricFamily(
            "locust_requests_min_response_time", "Shortest response time since the run started, ms.", labels=labels
        )
        maximum = GaugeMetricFamily(
            "locust_requests_max_response_time", "Longest response time since the run started, ms.", labels=labels
        )
        length = GaugeMetricFamily("locust_requests_avg_content_length", "Mean response length, bytes.", labels=labels)
        rows: list[Row] = [*locust.stats.sort_stats(stats.entries)[:MAX_ROWS], stats.total]
        for row in rows:
            key = [row.method or "", row.name]
            num_requests.add_metric(key, row.num_requests)
            num_failures.add_metric(key, row.num_failures)
            current_rps.add_metric(key, row.current_rps)
            current_fail.add_metric(key, row.current_fail_per_sec)
            avg.add_metric(key, row.avg_response_time)
            median.add_metric(key, row.median_response_time)
            minimum.add_metric(key, row.min_response_time or 0)
            maximum.add_metric(key, row.max_response_time)
            length.add_metric(key, row.avg_content_length)
        yield from (num_requests, num_failures, current_rps, current_fail, avg, median, minimum, maximum, length)

        total = stats.total
        yield GaugeMetricFamily(
            "locust_requests_fail_ratio", "Failed requests / requests since the run started.", value=total.fail_ratio
        )
        # Locust's own sliding window (~10 s); NaN when no window is there (no request in the last ~20 s)
        p50 = p95 = None
        if total.use_response_times_cache:
            p50 = total.get_current_response_time_percentile(0.5)
            p95 = total.get_current_response_time_percentile(0.95)
        yield GaugeMetricFamily(
            "locust_requests_current_response_time_percentile_50",
            "Median response time of every request over the last ~10 s, ms.",
            value=_ms(p50),
        )
        yield GaugeMetricFamily(
            "locust_requests_current_response_time_percentile_95",
            "95th percentile response time of every request over the last ~10 s, ms.",
            value=_ms(p95),
        )

    def _errors(self, stats: locust.stats.RequestStats) -> Iterator[Metric]:
        errors = GaugeMetricFamily(
            "locust_errors", "Failures by request and error message since the run started.",
            labels=["method", "name", "error"],
        )  # fmt: skip
        for error in list(stats.errors.values())[:MAX_ROWS]:
            text = locust.stats.StatsError.parse_error(error.error)
            errors.add_metric([error.method or "", error.name, text], error.occurrences)
        yield errors

    # -- kvload's HdrHistograms (kvload.stats) -----------------------------------------------------------------
    def _hdr(self) -> Iterator[Metric]:
        rec = recorder(self.environment)
        labels = ["method", "name"]
        count = GaugeMetricFamily(
            "kvt_locust_hdr_requests", "Successful requests in kvload's HdrHistogram since the run started.",
            labels=labels,
        )  # fmt: skip
        latency = GaugeMetricFamily(
            "kvt_locust_hdr_latency_seconds", "Response time percentiles of kvload's HdrHistogram (1 µs resolution).",
            labels=[*labels, "quantile"],
        )  # fmt: skip
        latency_max = GaugeMetricFamily(
            "kvt_locust_hdr_latency_max_seconds", "Longest response time in kvload's HdrHistogram.", labels=labels
        )
        lag = GaugeMetricFamily(
            "kvt_locust_hdr_send_lag_seconds",
            "Open loop (--kvt-rate): how late requests left against their intended time, percentiles.",
            labels=[*labels, "quantile"],
        )
        for key, h in sorted(rec.store.latency.items()):
            n = h.get_total_count()
            method, name = _split(key)
            count.add_metric([method, name], n)
            if not n:
                continue
            latency_max.add_metric([method, name], h.get_max_value() / 1e6)
            for p, us in h.get_percentile_to_value_dict(list(PERCENTILES)).items():
                latency.add_metric([method, name, _quantile(p)], us / 1e6)
        for key, h in sorted(rec.store.lag.items()):
            if not h.get_total_count():
                continue
            method, name = _split(key)
            for p, us in h.get_percentile_to_value_dict(list(PERCENTILES)).items():
                lag.add_metric([method, name, _quantile(p)], us / 1e6)
        yield from (count, latency, latency_max, lag)


def _split(key: str) -> tuple[str, str]:
    """kvload.stats keys are "<request type> <name>"; request types have no space."""
    method, _, name = key.partition(" ")
    return method, name


def _quantile(percentile: float) -> str:
    """99.9 -> "0.999" (Prometheus's quantile label is a fraction)."""
    return f"{percentile / 100:.6g}"


def _authorized(web_ui: Any, warn: Callable[[], None]) -> bool:
    if not web_ui.web_login:
        return True  # no login configured: as open as every other page of the web UI
    auth = request.authorization
    if auth is not None and auth.type == "basic":
        check = getattr(web_ui, CREDENTIALS_CHECK, None)
        if check is not None and check(auth.username or "", auth.password or ""):
            return True
        warn()
        return False
    return bool(current_user.is_authenticated)  # a browser logged in to the web UI


def add_metrics_route(environment: Environment) -> None:
    """Serve GET /metrics on the environment's web UI (master or local runner; a worker has no web UI)."""
    web_ui = environment.web_ui
    if web_ui is None or web_ui.app is None:
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LocustCollector(environment))
    last_warning = [-math.inf]

    def warn() -> None:
        # a scraper with a wrong password asks every few seconds: say so, but not every time (and never the password)
        now = time.monotonic()
        if now - last_warning[0] >= REFUSAL_LOG_EVERY_S:
            last_warning[0] = now
            logger.warning("%s: refused basic auth from %s (wrong user or password)", METRICS_PATH, request.remote_addr)

    @web_ui.app.route(METRICS_PATH)
    def kvt_metrics() -> Response:
        if not _authorized(web_ui, warn):
            return Response(
                "login required\n", 401, {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
                mimetype="text/plain",
            )  # fmt: skip
        # the format the scraper asks for (Prometheus prefers OpenMetrics), else the classic text format 0.0.4
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encode(registry), 200, {"Content-Type": content_type})
