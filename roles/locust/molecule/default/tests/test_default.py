"""Verify roles/locust (lab locust1): a master behind a login on lg-1 and a worker on each of lg-1 and lg-2, all
wheel-installed hardened units, and a real run started through the web UI against each host's redis-server."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import requests
import testinfra

from tests.support.molecule_kv import SECRETS, assert_no_secret_on_command_lines, assert_secrets_private
from tests.support.wait import settle

ADDRESSES = {"lg-1": "198.18.61.11", "lg-2": "198.18.61.12"}
MASTER = "lg-1"
WEB = f"http://{ADDRESSES[MASTER]}:8089"
# inventory.yml: one worker per host; prepare.yml planted a stale @3 on lg-2
WORKERS = {"lg-1": 1, "lg-2": 1}
ROOT = Path(__file__).resolve().parents[5]


def _name(host) -> str:
    return host.backend.get_hostname()


def _host(name: str):
    # the scenario's inventory is the directory (the file beside it holds no hosts)
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=str(inventory))


def _web_password() -> str:
    return (SECRETS / "locust-web-password").read_text().strip()


def _journal(host, unit: str) -> str:
    return host.run(f"journalctl -u {unit} --no-pager -n 40").stdout


def test_venv_has_the_wheel_version(host):
    assert host.file("/opt/kvtestbed/load-venv/bin/locust").is_executable
    init = (ROOT / "loadtests" / "kvload" / "__init__.py").read_text()
    version = re.search(r"^__version__\s*=\s*[\"']([^\"']+)", init, re.M).group(1)
    show = host.run("/opt/kvtestbed/load-venv/bin/pip show kvtestbed-load locust").stdout.splitlines()
    assert f"Version: {version}" in show
    # Locust as loadtests/constraints.txt pins it
    pinned = re.search(r"^locust==(\S+)", (ROOT / "loadtests" / "constraints.txt").read_text(), re.M).group(1)
    assert f"Version: {pinned}" in show
    assert "from kvload.locustfile import *" in host.file("/etc/kvtestbed/locust/locustfile.py").content_string


def test_units_run_hardened_as_the_service_user(host):
    name = _name(host)
    units = [f"kvtestbed-locust-worker@{i}" for i in range(1, WORKERS[name] + 1)]
    if name == MASTER:
        units.append("kvtestbed-locust-master")
    else:
        assert not host.service("kvtestbed-locust-master").is_running
    for unit in units:
        service = host.service(unit)
        assert service.is_running and service.is_enabled, _journal(host, unit)
        props = service.systemd_properties
        assert props["User"] == "kvtestbed" and props["ProtectSystem"] == "strict" and props["NoNewPrivileges"] == "yes"
        assert props["Restart"] == ("on-failure" if unit.endswith("master") else "always")
        pid = props["MainPID"]
        assert host.check_output(f"ps -o user= -p {pid}").strip() == "kvtestbed"


def test_workers_above_the_count_are_stopped(host):
    """prepare.yml left kvtestbed-locust-worker@3 enabled and running on lg-2: scaled down to locust_workers."""
    for i in range(WORKERS[_name(host)] + 1, 4):
        service = host.service(f"kvtestbed-locust-worker@{i}")
        assert not service.is_running and not service.is_enabled, i


def test_files_and_modes(host):
    name = _name(host)
    secret = host.file("/etc/kvtestbed/locust/secrets/molecule-redis")
    assert secret.mode == 0o600 and secret.user == "kvtestbed", "workers read the target's password file"
    assert host.file("/etc/kvtestbed/locust").mode == 0o750
    if name == MASTER:
        password = host.file("/etc/kvtestbed/locust/web-password")
        assert password.mode == 0o600 and password.user == "kvtestbed" and password.group == "kvtestbed"
        assert password.content_string.strip() == _web_password()
        conf = host.file("/etc/kvtestbed/locust/master.conf").content_string
        assert "kvt-web-password-file = /etc/kvtestbed/locust/web-password" in conf
        assert "host = redis://127.0.0.1:6379" in conf and "class-picker = true" in conf
        assert "stop-timeout = 10" in conf
    else:
        assert not host.file("/etc/kvtestbed/locust/web-password").exists
        assert not host.file("/etc/kvtestbed/firewall.d/locust.nft").exists
    assert_no_secret_on_command_lines(host)


def test_ports_listen_and_are_open_to_the_testbed(host):
    if _name(host) != MASTER:
        pytest.skip("only the master listens")
    address = ADDRESSES[MASTER]
    assert host.socket(f"tcp://{address}:8089").is_listening
    assert host.socket(f"tcp://{address}:5557").is_listening
    elements = host.check_output("nft list set inet kvtestbed_fw testbed_tcp")
    assert "8089" in elements and "5557" in elements


def test_secrets_are_private():
    assert_secrets_private()


# -- the web UI, from the controller (inside testbed_subnet: the bridge's address) ------------------------------


def _login(password: str) -> tuple[requests.Session, requests.Response]:
    session = requests.Session()
    response = session.post(f"{WEB}/kvt-login", data={"username": "admin", "password": password},
                            allow_redirects=False, timeout=10)
    return session, response


def test_login_refuses_a_wrong_password():
    assert requests.get(f"{WEB}/", allow_redirects=False, timeout=10).headers["Location"].startswith("/login")
    session, response = _login(_web_password() + "x")
    assert response.headers["Location"].startswith("/login")
    assert session.get(f"{WEB}/stats/requests", allow_redirects=False, timeout=10).status_code == 302


def _commands(name: str) -> int:
    """GET + SET calls the host's redis-server counted (the password read on the host: on no command line)."""
    stats = _host(name).check_output(
        "REDISCLI_AUTH=$(sed -n 's/^requirepass //p' /etc/redis/kvtestbed-auth.conf) "
        "redis-cli --no-auth-warning info commandstats")
    return sum(int(m.group(1)) for m in re.finditer(r"^cmdstat_(?:get|set):calls=(\d+)", stats, re.M))


def test_a_run_from_the_web_ui_loads_both_workers():
    """Log in, see both workers, swarm KvGetSetUser for a moment, stop: Locust's count is the servers' count."""
    session, response = _login(_web_password())
    assert response.status_code == 302 and response.headers["Location"] == "/"

    def stats() -> dict:
        return session.get(f"{WEB}/stats/requests", allow_redirects=False, timeout=10).json()

    assert stats()["worker_count"] == sum(WORKERS.values())
    before = {name: _commands(name) for name in ADDRESSES}
    swarm = session.post(f"{WEB}/swarm", data={"user_count": 4, "spawn_rate": 4, "host": "redis://127.0.0.1:6379",
                                               "user_classes": "KvGetSetUser"}, timeout=10).json()
    assert swarm["success"], swarm
    try:
        running = settle(stats, lambda s: s["state"] == "running" and s["total_rps"] > 0 and s["user_count"] == 4,
                         timeout_s=30, interval_s=0.5)
        assert running["state"] == "running" and running["user_count"] == 4, running
        # every worker got users and reports requests (the per-worker table of the master)
        per_worker = settle(stats, lambda s: all(w["user_count"] > 0 for w in s["workers"]), timeout_s=10)
        assert len(per_worker["workers"]) == 2 and all(w["user_count"] == 2 for w in per_worker["workers"])
    finally:
        assert session.post(f"{WEB}/stop", timeout=10).json()["success"]
    # workers report every few seconds; after the stop the totals settle
    done = settle(stats, lambda s: s["state"] == "stopped" and len(s["workers"]) == 2
                  and all(w["state"] == "ready" for w in s["workers"]), timeout_s=30, interval_s=0.5)
    assert done["state"] == "stopped", done["state"]
    total = settle(stats, lambda s: sum(r["num_requests"] for r in s["stats"] if r["name"] != "Aggregated")
                   == sum(_commands(n) - before[n] for n in ADDRESSES), timeout_s=15, interval_s=1)
    rows = [r for r in total["stats"] if r["name"] != "Aggregated"]
    served = {n: _commands(n) - before[n] for n in ADDRESSES}
    assert all(count > 0 for count in served.values()), served
    assert sum(r["num_requests"] for r in rows) == sum(served.values()), (rows, served)
    assert sum(r["num_failures"] for r in rows) == 0, total["errors"]
    # the master merged the workers' HdrHistograms (kvload's /hdr)
    hdr = session.get(f"{WEB}/hdr", allow_redirects=False, timeout=10).json()
    assert hdr["error"] is None and hdr["aggregated"]["count"] == sum(served.values()), hdr
