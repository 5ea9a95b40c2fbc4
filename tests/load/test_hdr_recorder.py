"""kvload's recorder: the bulk feed into Locust's table gives what per-request logging gives, below 1 ms too."""

from __future__ import annotations

import random

import pytest
from kvload.stats import HdrStore, recorder
from locust import User
from locust.env import Environment
from locust.stats import StatsEntry


class _NoUser(User):
    abstract = True


def _latencies_us(n: int) -> list[int]:
    rng = random.Random(7)
    # mostly sub-millisecond with a tail, as a loopback key-value server answers
    return [int(rng.lognormvariate(5.6, 0.5)) + 20 for _ in range(n)]


def test_bulk_feed_matches_locusts_own_log_and_keeps_sub_millisecond_percentiles() -> None:
    env = Environment(user_classes=[_NoUser])
    env.create_local_runner()
    rec = recorder(env)
    values = _latencies_us(5000)
    reference = StatsEntry(env.stats, "kv", "GET", use_response_times_cache=False)
    for us in values:
        rec.success("GET", "kv", us * 1000, length=3)
        reference.log(us / 1000, 3)
    rec.flush()
    entry = env.stats.get("kv", "GET")
    assert entry.num_requests == reference.num_requests == 5000
    assert env.stats.total.num_requests == 5000
    assert entry.total_content_length == 15000
    assert entry.total_response_time == pytest.approx(reference.total_response_time)
    assert entry.min_response_time == pytest.approx(min(values) / 1000)
    assert entry.max_response_time == pytest.approx(max(values) / 1000)
    true_p50_ms = sorted(values)[2500] / 1000
    assert true_p50_ms < 1
    # Locust's table: two significant digits below 1 ms (Locust alone keeps whole milliseconds there)
    assert entry.get_response_time_percentile(0.5) == pytest.approx(true_p50_ms, abs=0.011)
    hdr = rec.store.as_json()["requests"]["GET kv"]
    assert hdr["count"] == 5000
    assert abs(hdr["p50_us"] - true_p50_ms * 1000) <= 2  # HdrHistogram: exact to the µs below 1 ms


def test_a_pipeline_counts_each_command() -> None:
    env = Environment(user_classes=[_NoUser])
    env.create_local_runner()
    rec = recorder(env)
    rec.success("GET", "kv", 400_000, count=16)
    rec.flush()
    assert env.stats.get("kv", "GET").num_requests == 16
    assert rec.store.as_json()["requests"]["GET kv"]["count"] == 16


def test_failures_reach_locusts_failure_table() -> None:
    env = Environment(user_classes=[_NoUser])
    env.create_local_runner()
    rec = recorder(env)
    rec.failure("SET", "kv", 1_000_000, ConnectionError("reset by peer"), count=2)
    assert env.stats.get("kv", "SET").num_failures == 2
    assert any("reset by peer" in str(e.error) for e in env.stats.errors.values())


def test_worker_reports_merge_on_the_master() -> None:
    """What a worker adds to report_to_master, the master's store adds up (histograms, not averages)."""
    worker_env = Environment(user_classes=[_NoUser])
    worker_env.create_local_runner()
    worker = recorder(worker_env)
    for us in (100, 200, 300):
        worker.success("GET", "kv", us * 1000)
    worker.flush()
    # a local runner merges into its own store at flush; feed the interval again as a worker would ship it
    worker._interval["GET kv"] = worker.store.latency["GET kv"]
    data: dict[str, object] = {}
    worker._on_report_to_master(client_id="w1", data=data)
    master = HdrStore()
    master.add_encoded(data["kvt_hdr"])  # type: ignore[arg-type]
    master.add_encoded(data["kvt_hdr"])  # type: ignore[arg-type]  # a second worker with the same figures
    merged = master.as_json()["requests"]["GET kv"]
    assert merged["count"] == 6 and merged["min_us"] == 100 and merged["max_us"] == 300
