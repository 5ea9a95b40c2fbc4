"""Prometheus's config and file_sd targets for the real lab inventory, rendered by Ansible with the prometheus role's
own targets.yml, filter plugin and templates (tests/ansible/playbooks/prometheus_render.yml) and the role's
parameters from playbooks/monitoring.yml; no host is contacted.

The expected targets are worked out independently: groups and literal group vars from `ansible-inventory --list`,
the agents' templated instances from an `ansible ... debug` run. Then promtool must accept the rendered config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.binaries import require, unavailable

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RENDER = ROOT / "tests" / "ansible" / "playbooks" / "prometheus_render.yml"
OFFSET = 30000
NODE_PORT = 9100


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }


def _ansible(tool: str) -> str:
    path = BIN / tool
    if not path.exists():
        unavailable(f"{tool} is not installed in this environment (pip install -e '.[controller]')")
    return str(path)


def prometheus_params() -> dict[str, Any]:
    """The prometheus role's parameters in playbooks/monitoring.yml (its Prometheus play's vars)."""
    plays = yaml.safe_load((ROOT / "playbooks" / "monitoring.yml").read_text())
    play = next(
        p for p in plays if "prometheus" in [r if isinstance(r, str) else r.get("role") for r in p.get("roles", [])]
    )
    return dict(play.get("vars") or {})


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prometheus-lab")


@pytest.fixture(scope="module")
def rendered(work: Path) -> Path:
    """prometheus_config_dir with prometheus.yml, rules/ and file_sd/ as the role writes them for the lab."""
    config_dir = work / "etc"
    extra = {
        **prometheus_params(),
        "prometheus_config_dir": str(config_dir),
        "testbed_secrets_dir": str(work / "secrets"),
    }
    (work / "extra.json").write_text(json.dumps(extra))
    proc = subprocess.run(
        [_ansible("ansible-playbook"), "-i", "inventory/lab", str(RENDER), "-e", f"@{work / 'extra.json'}"],
        cwd=ROOT,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return config_dir


@pytest.fixture(scope="module")
def inventory(work: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [_ansible("ansible-inventory"), "-i", "inventory/lab", "--list"],
        cwd=ROOT,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    groups: dict[str, list[str]] = {}

    def hosts(group: str) -> list[str]:
        entry = data.get(group, {})
        return entry.get("hosts", []) + [h for child in entry.get("children", []) for h in hosts(child)]

    for group in data:
        if group != "_meta":
            groups[group] = sorted(set(hosts(group)))
    return {"groups": groups, "hostvars": data["_meta"]["hostvars"]}


@pytest.fixture(scope="module")
def agent_instances(work: Path) -> dict[str, list[dict[str, Any]]]:
    proc = subprocess.run(
        [
            _ansible("ansible"),
            "-i",
            "inventory/lab",
            "agents",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "var=agents_instances",
            "-e",
            f"testbed_secrets_dir={work / 'secrets'}",
        ],
        cwd=ROOT,
        env={**_env(work), "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    hosts = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]
    return {host: result["agents_instances"] for host, result in hosts.items()}


def file_sd(rendered: Path) -> dict[str, list[dict[str, Any]]]:
    jobs = {}
    for path in sorted((rendered / "file_sd").glob("*.yml")):
        groups = yaml.safe_load(path.read_text())
        assert isinstance(groups, list), path
        for group in groups:
            assert set(group) == {"targets", "labels"} and len(group["targets"]) == 1, group
            assert all(isinstance(v, str) for v in group["labels"].values()), group
        jobs[path.stem] = groups
    return jobs


def targets(jobs: dict[str, list[dict[str, Any]]], job: str) -> dict[str, dict[str, str]]:
    return {g["targets"][0]: g["labels"] for g in jobs[job]}


def test_one_file_per_job_named_in_the_config(rendered: Path) -> None:
    config = yaml.safe_load((rendered / "prometheus.yml").read_text())
    jobs = {c["job_name"]: c["file_sd_configs"][0]["files"] for c in config["scrape_configs"]}
    assert set(jobs) == set(file_sd(rendered)) == {
        "prometheus", "node", "redis", "sentinel", "agents", "runner", "nats", "locust"}
    for job, files in jobs.items():
        assert files == [str(rendered / "file_sd" / f"{job}.yml")]
    assert not any("static_configs" in c for c in config["scrape_configs"]), "targets listed by hand"


def test_every_lab_host_has_a_node_target(rendered: Path, inventory: dict[str, Any]) -> None:
    hostvars = inventory["hostvars"]
    expected = {f"{hostvars[h]['ansible_host']}:{NODE_PORT}": h for h in inventory["groups"]["all"]}
    assert {t: labels["host"] for t, labels in targets(file_sd(rendered), "node").items()} == expected
    assert set(inventory["groups"]["lab"]) <= set(expected.values())


def test_every_instance_has_its_exporter_on_port_plus_30000(rendered: Path, inventory: dict[str, Any]) -> None:
    groups, hostvars = inventory["groups"], inventory["hostvars"]
    expected = {}
    for group in ("redis", "valkey", "redis_cluster", "keydb"):
        assert groups[group], group
        if not hostvars[groups[group][0]].get(f"{group}_deploy", True):
            continue  # KeyDB without an archive (none vendored beside the project): no exporter, no target
        for host in groups[group]:
            settings = hostvars[host][f"{group}_kvstore"]
            for port in settings["ports"]:
                expected[f"{hostvars[host]['ansible_host']}:{port + OFFSET}"] = {
                    "host": host,
                    "deployment": group,
                    "engine": settings["engine"],
                    "instance_port": str(port),
                }
    assert targets(file_sd(rendered), "redis") == expected


def test_every_nats_server_has_its_collector_and_the_locust_master_is_scraped_with_its_login(
    rendered: Path, inventory: dict[str, Any]
) -> None:
    hostvars = inventory["hostvars"]
    jobs = file_sd(rendered)
    expected = {f"{hostvars[h]['ansible_host']}:7777": h for h in inventory["groups"]["nats"]}
    assert {t: labels["host"] for t, labels in targets(jobs, "nats").items()} == expected
    masters = [h for h in inventory["groups"]["loadgen"] if hostvars[h].get("locust_role", "master") == "master"]
    assert {t: labels["host"] for t, labels in targets(jobs, "locust").items()} == {
        f"{hostvars[h]['ansible_host']}:8089": h for h in masters}
    config = yaml.safe_load((rendered / "prometheus.yml").read_text())
    locust = next(c for c in config["scrape_configs"] if c["job_name"] == "locust")
    assert locust.get("metrics_path", "/metrics") == "/metrics"
    assert locust["basic_auth"]["username"] == "admin"
    assert locust["basic_auth"]["password_file"].endswith("/secrets/locust-web-password")
    assert "password" not in locust["basic_auth"], "the password itself in prometheus.yml"


def test_every_sentinel_has_its_exporter(rendered: Path, inventory: dict[str, Any]) -> None:
    hostvars = inventory["hostvars"]
    expected = {f"{hostvars[h]['ansible_host']}:{26379 + OFFSET}": h for h in inventory["groups"]["sentinel"]}
    got = targets(file_sd(rendered), "sentinel")
    assert {t: labels["host"] for t, labels in got.items()} == expected
    assert {labels["instance_port"] for labels in got.values()} == {"26379"}


def test_every_agent_has_its_metrics_port(
    rendered: Path, inventory: dict[str, Any], agent_instances: dict[str, list[dict[str, Any]]]
) -> None:
    hostvars = inventory["hostvars"]
    expected = {
        f"{hostvars[host]['ansible_host']}:{i['config']['service']['metrics_port']}": {
            "host": host,
            "agent": i["name"],
            "kind": i["kind"],
        }
        for host, instances in agent_instances.items()
        for i in instances
    }
    assert len(expected) >= 10
    assert targets(file_sd(rendered), "agents") == expected


def test_prometheus_scrapes_itself(rendered: Path, inventory: dict[str, Any]) -> None:
    hostvars = inventory["hostvars"]
    expected = {f"{hostvars[h]['ansible_host']}:9090": {"host": h} for h in inventory["groups"]["monitoring"]}
    assert targets(file_sd(rendered), "prometheus") == expected


def test_no_two_targets_share_an_address_and_port(rendered: Path) -> None:
    every = [g["targets"][0] for groups in file_sd(rendered).values() for g in groups]
    assert [t for t, n in Counter(every).items() if n > 1] == []


def test_promtool_accepts_the_rendered_config(rendered: Path) -> None:
    promtool = require(
        shutil.which("promtool") or (Path("/usr/bin/promtool").exists() and "/usr/bin/promtool") or None,
        "promtool",
        "apt-get install prometheus: Debian's package ships promtool",
    )
    proc = subprocess.run(
        [promtool, "check", "config", str(rendered / "prometheus.yml")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    groups = yaml.safe_load((rendered / "rules" / "kvtestbed.rules.yml").read_text())["groups"]
    rules = sum(len(g["rules"]) for g in groups)
    assert "1 rule files found" in proc.stdout and f"{rules} rules found" in proc.stdout, proc.stdout
