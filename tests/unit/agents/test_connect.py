"""Backoff, ConnectionTracker and the startup connection check."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest
from kvagent.clients.connect import Backoff, ConnectError, ConnectionTracker, connect_redis
from kvagent.service.config import RedisEndpoint
from prometheus_client import CollectorRegistry, generate_latest


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    random.seed(1)  # redis-py's FullJitterBackoff draws from the module-level generator
    backoff = Backoff(base_s=0.1, cap_s=1.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert max(delays[:1]) <= 0.1 and max(delays[1:2]) <= 0.2
    assert max(delays[10:]) > 0.5  # reaches the cap region
    assert min(delays[10:]) < 0.2  # ...and stays jittered there (full jitter, not "cap with noise")
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() <= 0.1
    for _ in range(10_000):  # no overflow after a very long outage
        backoff.next_delay()
    assert backoff.next_delay() <= 1.0


def test_backoff_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Backoff(base_s=0, cap_s=1)


def test_tracker_counts_outages_once_and_their_duration() -> None:
    registry = CollectorRegistry()
    tracker = ConnectionTracker(registry, "redis:x")
    other = ConnectionTracker(registry, "redis:y")  # two targets share the metric families
    tracker.up()  # up while up: no-op
    tracker.down()
    tracker.down()  # same outage
    time.sleep(0.05)
    assert tracker.is_down and tracker.disconnected_seconds() >= 0.05
    tracker.up()
    assert tracker.disconnections == 1 and not tracker.is_down
    closed = tracker.disconnected_seconds()
    time.sleep(0.01)
    assert tracker.disconnected_seconds() == closed
    text = generate_latest(registry).decode()
    assert 'kvt_disconnections_total{target="redis:x"} 1.0' in text
    assert 'kvt_disconnections_total{target="redis:y"} 0.0' in text
    assert 'kvt_connected{target="redis:x"} 1.0' in text
    assert other.summary() == {"disconnections": 0, "disconnected_seconds": 0.0}


def test_connect_redis_unreachable_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(ConnectError) as info:
        asyncio.run(connect_redis(RedisEndpoint("127.0.0.1", port)))
    assert f"redis 127.0.0.1:{port}: unreachable" in str(info.value)
    assert "\n" not in str(info.value)
