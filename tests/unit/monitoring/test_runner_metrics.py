"""The runner's /metrics: a fault is 1 while in place and 0 once healed, the phase and the writers' counts are
there, and a port already taken turns the endpoint off with one line instead of failing the run."""

from __future__ import annotations

import socket
import urllib.request

from kvtestbed.monitoring.runner_metrics import RunnerMetrics


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def test_a_fault_is_active_while_in_place_and_zero_after() -> None:
    port = _free_port()
    metrics = RunnerMetrics(port, address="127.0.0.1")
    assert metrics.start()
    try:
        metrics.run_started("demo", "20261201-000000-demo")
        metrics.fault_planned("kill-1", "kill", "redis", "primary")
        assert 'kvt_fault_active{group="redis",id="kill-1",kind="kill",target="primary"} 0.0' in _scrape(port)
        metrics.enter_phase("measure")
        metrics.fault("kill-1", "kill", "redis", "primary", ["pi-1"], active=True)
        metrics.writer_counts("quorum", ok=10, fail=2, unknown=1)
        text = _scrape(port)
        assert 'kvt_fault_active{group="redis",id="kill-1",kind="kill",target="primary"} 1.0' in text
        assert 'kvt_fault_hosts_info{hosts="pi-1",id="kill-1"} 1.0' in text
        assert 'kvt_run_phase{phase="measure"} 1.0' in text and 'kvt_run_phase{phase="warmup"} 0.0' in text
        assert 'kvt_writer_ops{client="quorum",result="fail"} 2.0' in text
        assert 'kvt_run_info{run_id="20261201-000000-demo",scenario="demo"} 1.0' in text
        metrics.fault("kill-1", "kill", "redis", "primary", ["pi-1"], active=False)
        assert 'kvt_fault_active{group="redis",id="kill-1",kind="kill",target="primary"} 0.0' in _scrape(port)
    finally:
        metrics.stop()
    assert not metrics.serving


def test_a_taken_port_is_one_line_and_no_endpoint() -> None:
    lines: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        metrics = RunnerMetrics(port, address="127.0.0.1", say=lines.append)
        assert not metrics.start()
    assert len(lines) == 1 and lines[0].startswith(f"runner metrics: port {port} not available")
    metrics.fault("kill-1", "kill", "redis", "primary", ["pi-1"], active=True)  # still safe to call: nothing served


def test_port_zero_is_off() -> None:
    assert not RunnerMetrics(0).start()
