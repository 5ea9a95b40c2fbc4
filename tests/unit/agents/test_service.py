"""The agent service shell: endpoints, stop on SIGTERM, final dump, startup errors."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kvagent.clients.connect import ConnectError
from kvagent.main import AGENT_KINDS, UnknownKindError, resolve_kind
from kvagent.service.config import ServiceConfig
from kvagent.service.metrics import LatencyMetric
from kvagent.service.shell import AgentBase, run_agent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DummyAgent(AgentBase):
    kind = "dummy"

    def __init__(self, port: int, fail_check: bool = False) -> None:
        super().__init__()
        self.port = port
        self.fail_check = fail_check
        self.latency = LatencyMetric(self.registry, "kvt_dummy_latency", "dummy")
        self.seen: dict[str, Any] = {}
        self.flushed = False

    async def check(self) -> None:
        if self.fail_check:
            raise ConnectError("redis 127.0.0.1:1: unreachable (test)")

    async def run(self, stop: asyncio.Event) -> None:
        self.latency.record_us(123)
        for path in ("/healthz", "/metrics", "/hdr", "/nope"):
            self.seen[path] = await asyncio.to_thread(_get, self.port, path)
        self.seen["keep-alive"] = await asyncio.to_thread(_head_then_get, self.port)
        os.kill(os.getpid(), signal.SIGTERM)  # the way systemd stops it
        await stop.wait()
        self.flushed = True

    def summary(self) -> dict[str, Any]:
        return {"flushed": self.flushed, "count": self.latency.count()}

    def histograms(self) -> dict[str, dict[str, str]]:
        return {self.latency.name: self.latency.encoded()}


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _head_then_get(port: int) -> list[tuple[int, int, str | None]]:
    """HEAD /metrics then GET /healthz on one connection: (status, body length, Connection header) each."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    seen = []
    try:
        for method, path in (("HEAD", "/metrics"), ("GET", "/healthz")):
            conn.request(method, path)
            resp = conn.getresponse()
            seen.append((resp.status, len(resp.read()), resp.getheader("Connection")))
        assert conn.sock is not None, "the server closed a keep-alive connection"
    finally:
        conn.close()
    return seen


def test_run_agent_serves_endpoints_and_dumps_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    dump = tmp_path / "out" / "dump.json"
    agent = DummyAgent(port)
    rc = run_agent(agent, ServiceConfig(metrics_port=port, dump_path=str(dump)))
    assert rc == 0
    assert agent.seen["/healthz"][0] == 200 and json.loads(agent.seen["/healthz"][1])["status"] == "ok"
    assert (
        agent.seen["/metrics"][0] == 200
        and "kvt_dummy_latency_seconds_count 1.0" in agent.seen["/metrics"][1]
    )
    assert "kvt_process_rss_bytes" in agent.seen["/metrics"][1]
    hdr = json.loads(agent.seen["/hdr"][1])
    assert hdr["summary"]["count"] == 1 and "kvt_dummy_latency" in hdr["histograms"]
    assert agent.seen["/nope"][0] == 404
    assert agent.seen["keep-alive"] == [(200, 0, "keep-alive"), (200, len(agent.seen["/healthz"][1]), "keep-alive")]
    final = json.loads(dump.read_text())
    assert final["summary"] == {"flushed": True, "count": 1}
    assert final["started"] <= final["stopped"] and final["histograms"]["kvt_dummy_latency"][""]


def test_startup_check_failure_propagates_without_dump(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    with pytest.raises(ConnectError):
        run_agent(DummyAgent(0, fail_check=True), ServiceConfig(metrics_port=0, dump_path=str(dump)))
    assert not dump.exists()


def test_agent_kinds_resolve() -> None:
    assert {"observer", "expiry", "streams", "pipeline", "hotkeys"} <= set(AGENT_KINDS)
    model, factory = resolve_kind("observer")
    assert model.__name__ == "ObserverConfig" and callable(factory)
    with pytest.raises(UnknownKindError, match="unknown agent kind"):
        resolve_kind("nosuch")
