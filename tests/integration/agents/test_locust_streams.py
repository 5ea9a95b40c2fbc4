"""Locust's HTTP users (loadtests/kvload/users/streams_http.py) against a streams agent on a real redis-server.

Headless, bounded (-t, -u), loopback only. Checks that what Locust counts and what the agent counts agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.binaries import unavailable
from tests.support.servers import free_port, wait_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
LOCUST = Path(sys.executable).parent / "locust"
USERS = 5


def test_locust_drives_the_streams_ingress(redis_server, agents, tmp_path: Path) -> None:
    if not LOCUST.exists():
        unavailable("locust is not installed (pip install -e '.[controller]')")
    port = free_port()
    agent = agents(
        "streams",
        {
            "redis": redis_server.endpoint(),
            "ingress": {"mode": "http", "http_port": port, "timeout_s": 2.0},
            "worker": {"consumers": 2},
        },
    )
    wait_port(port, timeout_s=30)  # the ingress may open a moment after the agent's metrics answer
    proc = subprocess.run(
        [
            str(LOCUST),
            "-f",
            str(ROOT / "loadtests" / "locustfile.py"),
            "--host",
            f"http://127.0.0.1:{port}",
            "--headless",
            "-u",
            str(USERS),
            "-r",
            str(USERS),
            "-t",
            "6s",
            "--json-file",
            str(tmp_path / "run"),
            "--only-summary",
            "StreamsRequestUser",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KVT_LOCUST_RATE": "20", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    entries = json.loads((tmp_path / "run.json").read_text())
    requests = sum(entry["num_requests"] for entry in entries)
    failures = sum(entry["num_failures"] for entry in entries)
    summary = agent.stop()["summary"]
    print(
        f"\nLOCUST streams: {requests} requests, {failures} failures, "
        f"agent completed {summary['completed']}, "
        f"rtt p50 {summary['request_rtt']['p50_us']} us"
    )
    assert requests >= 100 and failures == 0
    # Every request the agent took was answered, and Locust counted them all but those in flight when its
    # timer stopped the users (at most one per user).
    assert summary["completed"] == summary["requests"] and summary["lost"] == 0
    assert requests <= summary["completed"] <= requests + USERS
