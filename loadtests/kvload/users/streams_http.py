"""Locust users for the streams workload: each task is one request/response round trip through the ingress.

    locust -f loadtests/streams_http.py --host http://198.18.0.11:8480            # the lab's ingress; UI on :8089
    locust -f loadtests/streams_http.py --host http://127.0.0.1:8480 --headless -u 20 -r 5 -t 60s

Locust rounds response times below 100 ms to whole milliseconds: read the agent's HdrHistogram (/hdr) or its
Prometheus histograms for sub-millisecond figures; Locust's own numbers are for throughput and errors.
"""

from __future__ import annotations

import json
import os

from locust import FastHttpUser, constant_throughput, task

# requests per second per user; the run length is bounded by -t (or the web UI's stop)
RATE_PER_USER = float(os.environ.get("KVT_LOCUST_RATE", "10"))
PAYLOAD_BYTES = int(os.environ.get("KVT_LOCUST_PAYLOAD", "64"))


class StreamsRequestUser(FastHttpUser):
    """Streams workload over HTTP: one request/response round trip through an agent's ingress per task."""

    wait_time = constant_throughput(RATE_PER_USER)

    @task
    def request(self) -> None:
        payload = json.dumps({"data": "x" * PAYLOAD_BYTES})
        with self.client.post("/request", data=payload, name="streams request", catch_response=True) as response:
            if response.status_code == 200:
                response.success()
            else:
                # 503: the agent's breaker or concurrency limit refused; 504: no response within its timeout
                response.failure(f"HTTP {response.status_code}: {response.text[:80]}")
