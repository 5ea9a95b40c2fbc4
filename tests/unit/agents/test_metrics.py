"""LatencyMetric (Prometheus + HdrHistogram) and ProcessMetrics."""

from __future__ import annotations

from pathlib import Path

from hdrh.histogram import HdrHistogram
from kvagent.service.metrics import LATENCY_BUCKETS_S, LatencyMetric, ProcessMetrics
from prometheus_client import CollectorRegistry, generate_latest


def test_buckets_cover_25us_to_10s_log_spaced() -> None:
    assert LATENCY_BUCKETS_S[0] == 25e-6 and LATENCY_BUCKETS_S[-1] == 10.0
    ratios = [b / a for a, b in zip(LATENCY_BUCKETS_S, LATENCY_BUCKETS_S[1:], strict=False)]
    assert all(1.4 < r < 1.7 for r in ratios), ratios


def test_percentiles_counts_and_labels() -> None:
    registry = CollectorRegistry()
    metric = LatencyMetric(registry, "kvt_test_latency", "test", ["node"])
    for value in range(1, 1001):
        metric.record_us(value, node="a")
    metric.record_us(5000, node="b")
    assert metric.count(node="a") == 1000 and metric.count(node="b") == 1
    assert abs(metric.percentile_us(50, node="a") - 500) <= 1
    assert abs(metric.percentile_us(99, node="a") - 990) <= 1
    assert metric.percentile_us(50, node="zzz") == 0
    text = generate_latest(registry).decode()
    assert 'kvt_test_latency_seconds_count{node="a"} 1000.0' in text
    assert 'le="2.5e-05"' in text


def test_out_of_range_values_clamp_and_are_counted() -> None:
    registry = CollectorRegistry()
    metric = LatencyMetric(registry, "kvt_clamp", "test")
    metric.record_us(-5)
    metric.record_us(10**12)
    assert metric.count() == 2
    assert metric.summary()[""]["max_us"] >= 59_000_000
    assert "kvt_clamp_clamped_total 2.0" in generate_latest(registry).decode()


def test_encoded_histograms_merge_across_processes() -> None:
    one = LatencyMetric(CollectorRegistry(), "kvt_m", "m")
    two = LatencyMetric(CollectorRegistry(), "kvt_m", "m")
    for v in range(100):
        one.record_us(100 + v)
        two.record_us(10_000 + v)
    merged = HdrHistogram(1, 60_000_000, 3)
    for blob in (*one.encoded().values(), *two.encoded().values()):
        merged.decode_and_add(blob)
    assert merged.get_total_count() == 200
    assert merged.get_value_at_percentile(25) < 200 and merged.get_value_at_percentile(75) >= 10_000


def test_process_metrics_on_scrape(tmp_path: Path) -> None:
    thermal = tmp_path / "temp"
    thermal.write_text("48312\n")
    fake_vcgencmd = tmp_path / "vcgencmd"
    fake_vcgencmd.write_text("#!/bin/sh\necho throttled=0x50005\n")
    fake_vcgencmd.chmod(0o755)
    registry = CollectorRegistry()
    ProcessMetrics(registry, thermal_path=thermal, vcgencmd=str(fake_vcgencmd))
    text = generate_latest(registry).decode()
    assert "kvt_process_rss_bytes" in text and "kvt_host_net_sent_bytes_total" in text
    assert "kvt_soc_temperature_celsius 48.312" in text
    assert "kvt_soc_throttled 327685.0" in text and "kvt_soc_throttled_now 1.0" in text


def test_process_metrics_without_pi_sensors(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    ProcessMetrics(registry, thermal_path=tmp_path / "absent", vcgencmd=None)
    text = generate_latest(registry).decode()
    assert "kvt_process_cpu_seconds_total" in text
    assert "kvt_soc_temperature_celsius" not in text
