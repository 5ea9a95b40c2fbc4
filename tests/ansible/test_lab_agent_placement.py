"""The lab inventory's agent instances, rendered by Ansible, are valid agent configurations.

A typo in inventory/lab/group_vars/agents.yml would otherwise surface only on a deployed host, as a unit
that refuses to start. This renders `agents_instances` for every host of the agents group (secrets
generated into a temporary directory, never the project's) and loads each config with the agents' own loader.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kvagent.main import resolve_kind
from kvagent.service.config import load_config

from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = Path(sys.executable).parent / "ansible"


@pytest.fixture(scope="module")
def lab_instances(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    if not ANSIBLE.exists():
        unavailable("ansible is not installed in this environment (pip install -e '.[controller]')")
    secrets = tmp_path_factory.mktemp("secrets")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "json",
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(ANSIBLE), "-i", "inventory/lab", "agents", "-m", "ansible.builtin.debug",
                           "-a", "var=agents_instances", "-e", f"testbed_secrets_dir={secrets}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    hosts = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]
    return {host: result["agents_instances"] for host, result in hosts.items()}


def test_every_workload_is_placed_in_the_lab(lab_instances: dict[str, list[dict]]) -> None:
    kinds = {instance["kind"] for instances in lab_instances.values() for instance in instances}
    assert kinds == {"observer", "expiry", "streams", "pipeline", "hotkeys"}
    expiry_roles = [i["config"]["role"] for instances in lab_instances.values() for i in instances
                    if i["kind"] == "expiry"]
    # per key space (the Sentinel-managed Redis set, and the KeyDB mesh when the lab has KeyDB) one generator and
    # consumers on several hosts; one WorkQueue shared by 3 workers, as the workload describes
    generators = [i for instances in lab_instances.values() for i in instances
                  if i["kind"] == "expiry" and i["config"]["role"] == "generator"]
    spaces = {i["config"]["target"]["mode"] for i in generators}
    assert len(generators) == len(spaces) and "sentinel" in spaces, spaces
    assert expiry_roles.count("consumer") >= 2 * len(spaces) and expiry_roles.count("worker") >= 3


def test_every_lab_agent_config_loads(lab_instances: dict[str, list[dict]], tmp_path: Path) -> None:
    for host, instances in lab_instances.items():
        for instance in instances:
            path = tmp_path / f"{host}-{instance['name']}.yaml"
            path.write_text(yaml.safe_dump(instance["config"]))
            model, _factory = resolve_kind(instance["kind"])
            config = load_config(str(path), model)
            assert config.service.metrics_port > 0, (host, instance["name"])


def test_lab_agents_on_the_sentinel_set_follow_sentinel(lab_instances: dict[str, list[dict]]) -> None:
    """Agents that write to the Sentinel-managed Redis set find its master through the 3 Sentinels,
    so a failover scenario does not leave them writing to a dead or demoted node."""
    for instances in lab_instances.values():
        for instance in instances:
            config = instance["config"]
            if instance["kind"] == "streams":
                sentinels = config["sentinel"]["sentinels"]
            elif instance["kind"] == "observer":
                if "sentinel" not in config["writer"]:
                    # no Sentinel watches Valkey's set (6380) nor the KeyDB mesh (6381, where every peer writes)
                    assert config["writer"]["endpoint"]["port"] in (6380, 6381), instance["name"]
                    continue
                sentinels = config["writer"]["sentinel"]["sentinels"]
            elif instance["kind"] == "expiry":
                if config["target"]["mode"] == "nodes":
                    # the KeyDB mesh: consumers subscribe to every peer, there is no master to follow
                    assert {n["port"] for n in config["target"]["nodes"]} == {6381}, instance["name"]
                    continue
                sentinels = config["target"]["sentinels"]
            else:
                continue
            assert len(sentinels) == 3 and {s["port"] for s in sentinels} == {26379}, instance["name"]
            assert all(s["password"] for s in sentinels), instance["name"]
