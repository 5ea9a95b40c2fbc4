"""Verify roles/common on lab hosts: services, config, the firewall from outside, time sync."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest


def test_base_packages(host):
    for name in ("chrony", "nftables", "ca-certificates", "python3-apt"):
        assert host.package(name).is_installed, name


def test_chrony_follows_the_controller(host):
    service = host.service("chrony")
    assert service.is_running and service.is_enabled
    assert "server 198.18.31.1 iburst" in host.file("/etc/chrony/chrony.conf").content_string
    # chronyd reaches the controller's chronyd; ^* (selected) or ^+ once it has a few samples
    deadline = time.monotonic() + 30
    sources = ""
    while time.monotonic() < deadline:
        sources = host.check_output("chronyc -n sources")
        if "198.18.31.1" in sources and any(mark in sources for mark in ("^*", "^+")):
            break
        time.sleep(2)
    assert "198.18.31.1" in sources and any(mark in sources for mark in ("^*", "^+")), sources


def test_kernel_settings(host):
    conf = host.file("/etc/sysctl.d/60-kvtestbed.conf").content_string
    assert "vm.overcommit_memory = 1" in conf
    # network settings belong to the host's own namespace, so the lab applies them too
    assert host.sysctl("net.core.somaxconn") == 4096
    report = host.file("/etc/kvtestbed/common.json").content_string
    # vm.* lives in the shared kernel of a lab host: written, reported, not faked
    assert "vm.overcommit_memory" in report


def test_tuning_units_installed(host):
    unit = host.file("/etc/systemd/system/kvtestbed-thp.service")
    assert "ConditionPathIsReadWrite=/sys/kernel/mm/transparent_hugepage/enabled" in unit.content_string
    assert host.service("kvtestbed-thp").is_enabled


def test_cpu_governor_on_pi_only(host):
    governor = host.file("/etc/systemd/system/kvtestbed-cpu-governor.service")
    if host.backend.get_hostname() == "cpi-1":
        assert "performance" in governor.content_string
    else:
        assert not governor.exists


def test_hosts_file_lists_testbed(host):
    hosts = host.file("/etc/hosts").content_string
    assert "198.18.31.11 cpi-1" in hosts and "198.18.31.21 cpc-1" in hosts


def test_agent_user(host):
    user = host.user("kvtestbed")
    assert user.exists and user.shell == "/usr/sbin/nologin" and user.home == "/var/lib/kvtestbed"


def test_firewall_active(host):
    assert host.service("kvtestbed-firewall").is_enabled
    ruleset = host.check_output("nft list table inet kvtestbed_fw")
    assert "policy drop" in ruleset and "198.18.31.0/24" in ruleset


def test_ssh_open_to_the_testbed_and_the_controller_only(host):
    """SSH on the port Ansible uses (22 here), to the testbed subnet and the deploying controller: no rule for all."""
    chain = host.check_output("nft list chain inet kvtestbed_fw input")
    ssh = sorted(line.strip() for line in chain.splitlines() if "dport 22 " in line or line.strip().endswith("dport 22"))
    # the controller connects from the bridge gateway, inside the subnet: listed all the same
    assert ssh == ["ip saddr 198.18.31.0/24 tcp dport 22 accept", "ip saddr 198.18.31.1 tcp dport 22 accept"], chain


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def probe_listener(host):
    """A listener on a port the firewall has not opened, and one on a port a drop-in opens."""
    host.run("nohup python3 -m http.server 8099 >/dev/null 2>&1 & echo $! > /tmp/probe-8099.pid")
    host.run("nohup python3 -m http.server 8098 >/dev/null 2>&1 & echo $! > /tmp/probe-8098.pid")
    # the same atomic reload the roles' handlers use
    host.run("echo 'add element inet kvtestbed_fw testbed_tcp { 8098 }' > /etc/kvtestbed/firewall.d/probe.nft"
             " && nft -f /etc/kvtestbed/firewall.nft")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (host.socket("tcp://0.0.0.0:8098").is_listening
                                                and host.socket("tcp://0.0.0.0:8099").is_listening):
        time.sleep(0.5)
    yield
    host.run("kill $(cat /tmp/probe-8099.pid) $(cat /tmp/probe-8098.pid)")
    host.run("rm -f /etc/kvtestbed/firewall.d/probe.nft && nft -f /etc/kvtestbed/firewall.nft")


def test_firewall_from_the_controller(host, probe_listener):
    address = host.ansible.get_variables()["ansible_host"]
    assert _connects(address, 22)
    # the controller is inside the testbed subnet: opened ports answer, others are dropped
    assert _connects(address, 8098)
    assert not _connects(address, 8099)
    # the service really listens on 8099: the drop is the firewall's doing
    assert host.socket("tcp://0.0.0.0:8099").is_listening


OUTSIDE = "192.0.2.31"  # TEST-NET-1: an address outside the testbed subnet, put on the lab's bridge for the probe


@pytest.fixture
def outside_address(host):
    """The controller also answers as OUTSIDE on the lab bridge; the lab hosts route it through their gateway."""
    bridge = host.ansible.get_variables()["lab_bridge"]
    subprocess.run(["ip", "addr", "add", f"{OUTSIDE}/32", "dev", bridge], check=True, capture_output=True)
    yield OUTSIDE
    subprocess.run(["ip", "addr", "del", f"{OUTSIDE}/32", "dev", bridge], check=False, capture_output=True)


def _connects_from(source: str, address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2, source_address=(source, 0)):
            return True
    except OSError:
        return False


def test_ssh_dropped_from_outside_the_testbed(host, outside_address):
    address = host.ansible.get_variables()["ansible_host"]
    # the route between the host and the outside address works both ways (the host connects to it), so a
    # dropped SSH from there is the firewall's doing
    with socket.create_server((outside_address, 0)) as server:
        port = server.getsockname()[1]
        out = host.run(f"python3 -c \"import socket; socket.create_connection(('{outside_address}', {port}), timeout=5)\"")
        assert out.rc == 0, out.stderr
    assert not _connects_from(outside_address, address, 22)
    assert _connects(address, 22)
    assert host.socket("tcp://0.0.0.0:22").is_listening
