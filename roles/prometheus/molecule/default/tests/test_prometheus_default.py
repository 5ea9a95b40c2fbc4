"""Prometheus on one lab host: Debian's package with the role's command line, config checked by promtool, file_sd
targets generated from the inventory (stale ones gone after a redeploy), scraping itself and the node exporter,
the agents' recording rules loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from tests.support.wait import settle

ROLE = Path(__file__).resolve().parents[3]
ADDRESS = "198.18.83.21"
EXPECTED: dict[str, dict[str, dict[str, str]]] = {
    "prometheus": {f"{ADDRESS}:9090": {"host": "prom-1"}},
    "node": {f"{ADDRESS}:9100": {"host": "prom-1"}},
    "redis": {
        f"{ADDRESS}:36380": {"host": "prom-1", "deployment": "kv", "engine": "valkey", "instance_port": "6380"},
        f"{ADDRESS}:36381": {"host": "prom-1", "deployment": "kv", "engine": "valkey", "instance_port": "6381"},
    },
    "sentinel": {
        f"{ADDRESS}:56380": {"host": "prom-1", "deployment": "sentinels", "engine": "redis", "instance_port": "26380"},
    },
    "agents": {
        f"{ADDRESS}:9410": {"host": "prom-1", "agent": "observer-1", "kind": "observer"},
        f"{ADDRESS}:9430": {"host": "prom-1", "agent": "hotkeys", "kind": "hotkeys"},
    },
    # the scenario runner's /metrics (prometheus_runner_targets): none in this scenario, an empty file
    "runner": {},
    "nats": {f"{ADDRESS}:7777": {"host": "prom-1"}},
    "locust": {f"{ADDRESS}:8090": {"host": "prom-1"}},
}


def api(host, path: str) -> Any:
    reply = json.loads(host.check_output(f"curl -sf 'http://127.0.0.1:9090{path}'"))
    assert reply["status"] == "success", reply
    return reply["data"]


def test_prometheus_runs_with_the_roles_command_line(host):
    service = host.service("prometheus")
    assert service.is_running and service.is_enabled
    assert host.socket("tcp://9090").is_listening
    flags = api(host, "/api/v1/status/flags")
    assert flags["config.file"] == "/etc/prometheus/prometheus.yml"
    assert flags["web.listen-address"] == ":9090"
    assert flags["storage.tsdb.retention.time"] == "2d"
    # the storage path stays Debian's
    assert flags["storage.tsdb.path"] == "/var/lib/prometheus/metrics2/"


def test_config_passes_promtool(host):
    out = host.run("promtool check config /etc/prometheus/prometheus.yml")
    assert out.rc == 0, out.stdout + out.stderr
    config = yaml.safe_load(host.file("/etc/prometheus/prometheus.yml").content_string)
    assert config["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s"}
    assert [c["job_name"] for c in config["scrape_configs"]] == list(EXPECTED)


def test_the_locust_job_logs_in_with_a_password_file_only_prometheus_reads(host):
    config = yaml.safe_load(host.file("/etc/prometheus/prometheus.yml").content_string)
    locust = next(c for c in config["scrape_configs"] if c["job_name"] == "locust")
    assert locust["basic_auth"] == {"username": "admin", "password_file": "/etc/prometheus/secrets/locust-web-password"}
    assert not any("basic_auth" in c for c in config["scrape_configs"] if c["job_name"] != "locust")
    secret = host.file("/etc/prometheus/secrets/locust-web-password")
    assert (secret.user, secret.group, secret.mode) == ("root", "prometheus", 0o640)
    ephemeral = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    assert secret.content_string.strip() == (ephemeral / "secrets" / "locust-web-password").read_text().strip()
    # the password is in no file Prometheus serves its config from (the /api/v1/status/config answer)
    assert secret.content_string.strip() not in json.dumps(api(host, "/api/v1/status/config"))


def test_file_sd_lists_the_inventorys_targets_and_nothing_stale(host):
    """side_effect.yml left a removed host's target, a job file and a rule file behind; the redeploy removed them."""
    assert sorted(host.file("/etc/prometheus/file_sd").listdir()) == sorted(f"{job}.yml" for job in EXPECTED)
    assert host.file("/etc/prometheus/rules").listdir() == ["kvtestbed.rules.yml"]
    for job, expected in EXPECTED.items():
        sd = host.file(f"/etc/prometheus/file_sd/{job}.yml")
        assert sd.user == "root" and sd.mode == 0o644
        groups = yaml.safe_load(sd.content_string)
        assert {g["targets"][0]: g["labels"] for g in groups} == expected, job
        assert all(len(g["targets"]) == 1 for g in groups), job


def test_every_target_is_discovered_and_prometheus_and_node_are_up(host):
    def sample() -> dict[str, dict[str, Any]]:
        return {t["labels"]["instance"]: t for t in api(host, "/api/v1/targets?state=active")["activeTargets"]}

    def up(targets: dict[str, dict[str, Any]]) -> bool:
        return all(targets.get(t, {}).get("health") == "up" for t in (*EXPECTED["prometheus"], *EXPECTED["node"]))

    targets = settle(sample, up, timeout_s=60, interval_s=1)
    assert up(targets), {t: (v["scrapePool"], v["health"], v["lastError"]) for t, v in targets.items()}
    assert {t: v["scrapePool"] for t, v in targets.items()} == {
        target: job for job, expected in EXPECTED.items() for target in expected
    }
    for job, expected in EXPECTED.items():
        for target, labels in expected.items():
            got = targets[target]["labels"]
            assert got == {**labels, "instance": target, "job": job}, target


def test_recording_rules_are_loaded(host):
    rules_file = yaml.safe_load((ROLE / "files" / "rules" / "kvtestbed.rules.yml").read_text())
    wanted = [(g["name"], r["record"]) for g in rules_file["groups"] for r in g["rules"]]
    groups = api(host, "/api/v1/rules?type=record")["groups"]
    loaded = [(g["name"], r["name"]) for g in groups for r in g["rules"]]
    assert loaded == wanted
    assert {r["health"] for g in groups for r in g["rules"]} <= {"ok", "unknown"}


def test_nothing_remains_of_the_packages_first_run(host):
    """The package starts Prometheus with Debian's example config (localhost:9090 and localhost:9100); the role
    drops what that run stored, so no query answers with its targets (a `node` localhost:9100 down lingered for the
    5 min lookback window before, and failed a lab test in CI)."""
    result = api(host, "/api/v1/series?" + "match[]=" + quote('up{instance=~"localhost:.*"}'))
    assert result == [], result


def test_the_last_config_reload_succeeded(host):
    """As Prometheus reports it about itself, on its own target."""
    query = f'prometheus_config_last_reload_successful{{instance="{ADDRESS}:9090"}}'

    def sample() -> list[dict[str, Any]]:
        return api(host, f"/api/v1/query?query={quote(query)}")["result"]

    result = settle(sample, bool, timeout_s=30, interval_s=1)
    assert [r["value"][1] for r in result] == ["1"], result


def test_the_firewall_opens_the_port_to_the_testbed(host):
    assert "{ 9090 }" in host.file("/etc/kvtestbed/firewall.d/prometheus.nft").content_string
    assert "9090" in host.check_output("nft list set inet kvtestbed_fw testbed_tcp")
