"""`kvtestbed urls`: the lab inventory's Prometheus, Locust and Grafana lines (read with ansible-inventory, no
network), an inventory without a monitoring group in one line, no password ever printed, and --check asking real
HTTP servers on loopback (one answering, one port closed)."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kvtestbed import cli
from kvtestbed.inventory import Inventory
from kvtestbed.monitoring.urls import format_lines, probe_all, service_urls
from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[3]


def listing(hostvars: dict[str, dict[str, Any]], groups: dict[str, list[str]]) -> Inventory:
    """An inventory as `ansible-inventory --list` prints it."""
    data: dict[str, Any] = {"_meta": {"hostvars": hostvars}, "all": {"children": [*groups, "ungrouped"]}}
    data.update({group: {"hosts": members} for group, members in groups.items()})
    return Inventory.from_listing("test-inventory", data)


def test_the_lab_inventory(capsys: pytest.CaptureFixture[str]) -> None:
    if not (Path(sys.executable).parent / "ansible-inventory").exists():
        unavailable("ansible-inventory is not installed in this environment (pip install -e '.[controller]')")
    code = cli.main(["urls", "--inventory", str(ROOT / "inventory" / "lab")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [" ".join(line.split()) for line in out] == [
        "Prometheus pc-1 http://198.18.0.21:9090 no login",
        "Locust pc-2 http://198.18.0.22:8089 user admin, password in secrets/locust-web-password",
        "Grafana: not deployed on pc-1 (grafana_deploy: false)",
    ]


def test_no_monitoring_group_is_one_line(tmp_path: Path) -> None:
    inventory = listing({"h-1": {"ansible_host": "10.0.0.1"}}, {"redis": ["h-1"]})
    lines = format_lines(service_urls(inventory, tmp_path))
    assert lines == [
        "no monitoring group in test-inventory: no Prometheus or Grafana (add a monitoring host, docs/monitoring.md)",
        "Locust: no host has locust_role: master",
    ]


def test_real_hosts_grafana_group_ports_and_no_password(tmp_path: Path) -> None:
    """A grafana group wins over the monitoring hosts, the inventory's ports and users are used, the password files
    are named (outside the checkout: by their full path) and their contents never printed."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("locust-web-password", "grafana-admin-password"):
        (secrets / name).write_text(f"s3cret-{name}\n")
    inventory = listing(
        {
            "mon-1": {"ansible_host": "192.168.50.21", "prometheus_port": 9091},
            "graf-1": {"ansible_host": "192.168.50.23", "grafana_port": 3300, "grafana_admin_user": "boss"},
            "lg-1": {"ansible_host": "fd00::5", "locust_role": "master", "locust_web_port": "8090"},
        },
        {"monitoring": ["mon-1"], "grafana": ["graf-1"], "loadgen": ["lg-1"]},
    )
    lines = format_lines(service_urls(inventory, secrets, root=ROOT))
    assert [" ".join(line.split()) for line in lines] == [
        "Prometheus mon-1 http://192.168.50.21:9091 no login",
        f"Locust lg-1 http://[fd00::5]:8090 user admin, password in {secrets}/locust-web-password",
        f"Grafana graf-1 http://192.168.50.23:3300 user boss, password in {secrets}/grafana-admin-password",
    ]
    assert "s3cret" not in "\n".join(lines)


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/-/ready" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ready_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_says_up_and_down(ready_server: int, tmp_path: Path) -> None:
    inventory = listing(
        {
            "mon-1": {"ansible_host": "127.0.0.1", "prometheus_port": ready_server, "grafana_deploy": False},
            "lg-1": {"ansible_host": "127.0.0.1", "locust_role": "master", "locust_web_port": _closed_port()},
        },
        {"monitoring": ["mon-1"], "loadgen": ["lg-1"]},
    )
    result = service_urls(inventory, tmp_path)
    states = probe_all(result.endpoints, timeout_s=5)
    assert [e.service for e in result.endpoints] == ["Prometheus", "Locust"]
    assert states[0] == "up (HTTP 200)"
    assert states[1].startswith("down (") and "refused" in states[1].lower()
    lines = format_lines(result, states)
    assert lines[0].endswith("[up (HTTP 200)]") and "[down (" in lines[1]
