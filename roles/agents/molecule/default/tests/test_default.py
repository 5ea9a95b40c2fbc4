"""Verify roles/agents: a wheel-installed observer agent runs as a hardened unit and measures for real."""

from __future__ import annotations

import re
import time
import urllib.request

ADDRESS = "198.18.32.11"


def scrape() -> str:
    with urllib.request.urlopen(f"http://{ADDRESS}:9401/metrics", timeout=5) as response:
        return response.read().decode()


def sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_venv_has_the_cli(host):
    assert host.file("/opt/kvtestbed/venv/bin/kvagent").is_executable
    assert host.run("/opt/kvtestbed/venv/bin/pip show kvtestbed").stdout.find("Version: 0.1.0") >= 0


def test_unit_runs_as_the_agent_user(host):
    service = host.service("kvtestbed-agent@observer-1")
    assert service.is_running and service.is_enabled
    pid = host.check_output("systemctl show -p MainPID --value kvtestbed-agent@observer-1")
    assert host.check_output(f"ps -o user= -p {pid}").strip() == "kvtestbed"
    assert host.check_output("systemctl show -p ProtectSystem --value kvtestbed-agent@observer-1") == "strict"


def test_config_is_private(host):
    config = host.file("/etc/kvtestbed/agents/observer-1.yaml")
    assert config.mode == 0o640 and config.user == "root" and config.group == "kvtestbed"
    assert f"metrics_host: {ADDRESS}" in config.content_string
    assert host.file("/etc/kvtestbed/agents/observer-1.env").content_string.strip() == "AGENT_KIND=observer"


def test_metrics_port_listens_and_is_open_to_the_testbed(host):
    assert host.socket(f"tcp://{ADDRESS}:9401").is_listening
    assert "9401" in host.check_output("nft list set inet kvtestbed_fw testbed_tcp")


def test_observer_measures_every_write(host):
    """Functional probe: writes go up between two scrapes and each listener records latencies."""
    first = scrape()
    time.sleep(3)
    second = scrape()
    metric_names = set(re.findall(r"^(kvt_[a-z_]+)", second, re.MULTILINE))
    assert any("write" in name for name in metric_names), sorted(metric_names)
    writes = [n for n in metric_names if "writes" in n and n.endswith("_total")]
    assert writes, sorted(metric_names)
    assert sample(second, writes[0]) > sample(first, writes[0]) + 50  # 50 writes/s for 3 s
    latency_counts = [n for n in metric_names if n.endswith("_count") and "latency" in n]
    assert latency_counts and sample(second, latency_counts[0]) > 0


def test_stop_writes_the_final_dump(host):
    host.run("systemctl stop kvtestbed-agent@observer-1")
    dump = host.file("/var/lib/kvtestbed/agents/observer-1.json")
    assert dump.exists and '"histograms"' in dump.content_string
    host.run("systemctl start kvtestbed-agent@observer-1")
