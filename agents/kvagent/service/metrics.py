"""Latency and process metrics shared by every agent.

Two views of each latency: a Prometheus histogram (seconds, buckets fine enough for loopback
microseconds) for dashboards, and an HdrHistogram per label set (integer microseconds, 3 significant
figures) for exact percentiles that runs can merge by decoding the base64 blobs.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import psutil
from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

HDR_LOWEST_US = 1
HDR_HIGHEST_US = 60_000_000
HDR_SIGFIGS = 3


def _renard_buckets(first_s: float, last_s: float) -> tuple[float, ...]:
    """Log-spaced bucket bounds: the R5 series (1, 1.6, 2.5, 4, 6.3 per decade) from first_s to last_s."""
    steps = (1.0, 1.6, 2.5, 4.0, 6.3)
    bounds: list[float] = []
    decade = 1e-6
    while decade <= last_s:
        for step in steps:
            bound = round(step * decade, 12)
            if first_s - 1e-15 <= bound <= last_s + 1e-15:
                bounds.append(bound)
        decade *= 10
    return tuple(bounds)


# 25 us .. 10 s: the default prometheus buckets start at 5 ms, useless for loopback round trips.
LATENCY_BUCKETS_S: tuple[float, ...] = _renard_buckets(25e-6, 10.0)


def _label_key(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


class LatencyMetric:
    """One latency, recorded in microseconds into a Prometheus histogram and an HdrHistogram per label set.

    Thread safe: the observer's synchronous listener records from its own thread.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
    ) -> None:
        self.name = name
        self._labelnames = tuple(labelnames)
        self._histogram = Histogram(
            f"{name}_seconds", documentation, self._labelnames, registry=registry, buckets=LATENCY_BUCKETS_S
        )
        self._clamped = Counter(
            f"{name}_clamped",
            f"{documentation} (values outside {HDR_LOWEST_US}..{HDR_HIGHEST_US} us, clamped)",
            self._labelnames,
            registry=registry,
        )
        self._hdr: dict[str, HdrHistogram] = {}
        self._lock = threading.Lock()

    def _labels(self, labels: dict[str, str]) -> dict[str, str]:
        if set(labels) != set(self._labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self._labelnames)}")
        return {k: str(v) for k, v in labels.items()}

    def _hdr_for(self, key: str) -> HdrHistogram:
        hist = self._hdr.get(key)
        if hist is None:
            hist = self._hdr[key] = HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGFIGS)
        return hist

    def record_us(self, value_us: int, **labels: str) -> None:
        labels = self._labels(labels)
        clamped = min(max(int(value_us), HDR_LOWEST_US), HDR_HIGHEST_US)
        if self._labelnames:
            self._histogram.labels(**labels).observe(clamped / 1e6)
        else:
            self._histogram.observe(clamped / 1e6)
        if clamped != value_us:
            (self._clamped.labels(**labels) if self._labelnames else self._clamped).inc()
        key = _label_key(labels)
        with self._lock:
            self._hdr_for(key).record_value(clamped)

    def percentile_us(self, q: float, **labels: str) -> int:
        """Value at percentile ``q`` given in percent (50, 99, 99.9); 0 when nothing was recorded."""
        key = _label_key(self._labels(labels))
        with self._lock:
            hist = self._hdr.get(key)
            return int(hist.get_value_at_percentile(q)) if hist is not None and hist.get_total_count() else 0

    def count(self, **labels: str) -> int:
        key = _label_key(self._labels(labels))
        with self._lock:
            hist = self._hdr.get(key)
            return int(hist.get_total_count()) if hist is not None else 0

    def label_sets(self) -> list[str]:
        with self._lock:
            return sorted(self._hdr)

    def encoded(self) -> dict[str, str]:
        """Label-set key ('k=v,k=v'; '' without labels) -> base64 HdrHistogram (decode_and_add merges)."""
        with self._lock:
            return {key: hist.encode().decode("ascii") for key, hist in self._hdr.items()}

    def summary(self) -> dict[str, dict[str, int]]:
        """count/p50/p99/p999/max per label set, for logs and the final dump."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for key, hist in self._hdr.items():
                out[key] = {
                    "count": int(hist.get_total_count()),
                    "p50_us": int(hist.get_value_at_percentile(50)),
                    "p99_us": int(hist.get_value_at_percentile(99)),
                    "p999_us": int(hist.get_value_at_percentile(99.9)),
                    "max_us": int(hist.get_max_value()),
                }
        return out


THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


class _ProcessCollector(Collector):
    """Reads psutil at scrape time, so idle agents do no sampling work."""

    def __init__(self, thermal_path: Path, vcgencmd: str | None) -> None:
        self._process = psutil.Process()
        self._thermal_path = thermal_path
        self._vcgencmd = vcgencmd
        self._throttled: tuple[float, int | None] = (0.0, None)
        psutil.cpu_percent(interval=None)  # prime: the first call always returns 0.0

    def _throttle_bits(self) -> int | None:
        # vcgencmd forks a process: cache for 5 s so fast scrapers do not pay it each time.
        stamp, value = self._throttled
        if self._vcgencmd is None or time.monotonic() - stamp < 5.0:
            return value
        try:
            out = subprocess.run(
                [self._vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=2, check=False
            ).stdout
            value = int(out.strip().split("=", 1)[1], 16)
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            value = None
        self._throttled = (time.monotonic(), value)
        return value

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        with self._process.oneshot():
            cpu = self._process.cpu_times()
            rss = self._process.memory_info().rss
            threads = self._process.num_threads()
        yield CounterMetricFamily(
            "kvt_process_cpu_seconds", "Agent process CPU time (user+system)", value=cpu.user + cpu.system
        )
        yield GaugeMetricFamily("kvt_process_rss_bytes", "Agent process resident set size", value=rss)
        yield GaugeMetricFamily("kvt_process_threads", "Agent process threads", value=threads)
        yield GaugeMetricFamily(
            "kvt_host_cpu_percent", "Host CPU use since the previous scrape", value=psutil.cpu_percent(None)
        )
        yield GaugeMetricFamily(
            "kvt_host_memory_available_bytes",
            "Host available memory",
            value=psutil.virtual_memory().available,
        )
        net = psutil.net_io_counters()
        yield CounterMetricFamily(
            "kvt_host_net_sent_bytes", "Host bytes sent, all interfaces", value=net.bytes_sent
        )
        yield CounterMetricFamily(
            "kvt_host_net_recv_bytes", "Host bytes received, all interfaces", value=net.bytes_recv
        )
        try:
            millideg = int(self._thermal_path.read_text().strip())
            yield GaugeMetricFamily(
                "kvt_soc_temperature_celsius", "SoC temperature (thermal_zone0)", value=millideg / 1000
            )
        except (OSError, ValueError):
            pass  # not a Pi or no thermal zone: no series rather than a fake value
        bits = self._throttle_bits()
        if bits is not None:
            yield GaugeMetricFamily("kvt_soc_throttled", "vcgencmd get_throttled bit mask", value=bits)
            yield GaugeMetricFamily(
                "kvt_soc_throttled_now", "1 when currently throttled (bit 2)", value=(bits >> 2) & 1
            )
            yield GaugeMetricFamily(
                "kvt_soc_undervoltage_now", "1 when under-voltage now (bit 0)", value=bits & 1
            )


class ProcessMetrics:
    """Registers process and host gauges (psutil; Pi SoC temperature and throttling where present)."""

    def __init__(
        self, registry: CollectorRegistry, thermal_path: Path = THERMAL_ZONE, vcgencmd: str | None = None
    ) -> None:
        self._collector = _ProcessCollector(thermal_path, vcgencmd or shutil.which("vcgencmd"))
        registry.register(self._collector)

    @staticmethod
    def rss_bytes() -> int:
        return int(psutil.Process().memory_info().rss)
