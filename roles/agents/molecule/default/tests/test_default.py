"""Verify roles/agents: a wheel-installed observer agent runs as a hardened unit and measures for real."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.wait import settle

ADDRESS = "198.18.32.11"
# the observer's bounds in inventory.yml: writer.count, the listeners' names
WRITES = 150
LISTENERS = ("sync-1", "async-1")


def scrape() -> str:
    with urllib.request.urlopen(f"http://{ADDRESS}:9401/metrics", timeout=5) as response:
        return response.read().decode()


def samples() -> dict[tuple[str, str], float]:
    """Every sample of the Prometheus text, exactly parsed: (sample name, listener label or "") -> value."""
    out = {}
    for family in text_string_to_metric_families(scrape()):
        for sample in family.samples:
            out[(sample.name, sample.labels.get("listener", ""))] = sample.value
    return out


def test_venv_has_the_cli(host):
    assert host.file("/opt/kvtestbed/venv/bin/kvagent").is_executable
    # the version the role read from the agents' package (kvagent.__version__), installed on the host
    init = (Path(__file__).resolve().parents[5] / "agents" / "kvagent" / "__init__.py").read_text()
    version = re.search(r"^__version__\s*=\s*[\"']([^\"']+)", init, re.M).group(1)
    assert f"Version: {version}" in host.run("/opt/kvtestbed/venv/bin/pip show kvtestbed-agent").stdout.splitlines()


def test_unit_runs_as_the_agent_user(host):
    service = host.service("kvtestbed-agent@observer-1")
    assert service.is_running and service.is_enabled
    pid = host.check_output("systemctl show -p MainPID --value kvtestbed-agent@observer-1")
    assert host.check_output(f"ps -o user= -p {pid}").strip() == "kvtestbed"
    assert host.check_output("systemctl show -p ProtectSystem --value kvtestbed-agent@observer-1") == "strict"


def test_an_instance_without_state_is_installed_idle(host):
    # agents_state: stopped by default, so deploy leaves no agent load behind; a scenario starts it
    service = host.service("kvtestbed-agent@observer-idle")
    assert not service.is_running and not service.is_enabled
    assert host.file("/etc/kvtestbed/agents/observer-idle.yaml").exists
    assert host.run("systemctl start kvtestbed-agent@observer-idle").rc == 0
    try:
        assert host.service("kvtestbed-agent@observer-idle").is_running
    finally:
        host.run("systemctl stop kvtestbed-agent@observer-idle")


def test_config_is_private(host):
    config = host.file("/etc/kvtestbed/agents/observer-1.yaml")
    assert config.mode == 0o640 and config.user == "root" and config.group == "kvtestbed"
    assert f"metrics_host: {ADDRESS}" in config.content_string
    assert host.file("/etc/kvtestbed/agents/observer-1.env").content_string.strip() == "AGENT_KIND=observer"


def test_metrics_port_listens_and_is_open_to_the_testbed(host):
    assert host.socket(f"tcp://{ADDRESS}:9401").is_listening
    assert "9401" in host.check_output("nft list set inet kvtestbed_fw testbed_tcp")


def _settled(values: dict[tuple[str, str], float]) -> bool:
    return values.get(("kvt_observer_writes_total", "")) == WRITES and all(
        values.get(("kvt_observer_versions_total", name), 0) + values.get(("kvt_observer_coalesced_total", name), 0)
        == WRITES for name in LISTENERS)


def test_observer_accounts_for_every_write(host):
    """Functional probe: the writer stops at writer.count and both listeners account for every one of its writes."""
    # 150 writes at 50/s, started at converge: long done unless something is wrong
    values = settle(samples, _settled, timeout_s=60, interval_s=1)
    assert values[("kvt_observer_writes_total", "")] == WRITES, values
    assert values[("kvt_observer_write_errors_total", "")] == 0
    assert values[("kvt_observer_write_latency_seconds_count", "")] == WRITES
    for name in LISTENERS:
        def value(metric: str, name: str = name) -> float:
            return values[(f"kvt_observer_{metric}", name)]

        # one notification per write, none missed or doubled; every version read or counted as overwritten unseen
        assert value("notifications_total") == WRITES, (name, values)
        assert value("missed_total") == 0 and value("duplicates_total") == 0 and value("stale_reads_total") == 0, name
        assert value("versions_total") + value("coalesced_total") == WRITES, (name, values)
        assert value("versions_total") >= 1 and value("notify_latency_seconds_count") >= value("versions_total"), name


def test_stop_writes_the_final_dump(host):
    host.run("systemctl stop kvtestbed-agent@observer-1")
    dump = host.file("/var/lib/kvtestbed/agents/observer-1.json")
    assert dump.exists and '"histograms"' in dump.content_string
    host.run("systemctl start kvtestbed-agent@observer-1")
