"""Scenarios end to end on lab hosts: `kvtestbed run` with a SIGKILL and a partition of the Sentinel-managed primary.

Brings up a lab of its own (lab_name scnlab, 198.18.71.0/24, three emulated Pis: Redis primary + 2 replicas, three
Sentinels, an observer agent deployed idle), runs two short scenarios with the CLI and checks what summary.json says
against the servers themselves: every acknowledged write read back independently from the primary the Sentinels
name now, the client's failover time against the Sentinels' own +switch-master, the fault healed, the agent started
for the run and stopped after it, and the report drawn in Chromium without an error.

    .venv/bin/pytest -m lab tests/lab/test_scenarios_lab.py -s          # needs root; ~10 min
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.lab import kvtestbed, lab_vars, run_playbook, ssh
from tests.support.report_page import offline_console

LAB = "scnlab"
SUBNET = "198.18.71"
HOSTS = {"sc-1": f"{SUBNET}.11", "sc-2": f"{SUBNET}.12", "sc-3": f"{SUBNET}.13"}
KEY = f"/var/lib/kvtestbed/lab/{LAB}/ssh/id_ed25519"

INVENTORY = """---
all:
  hosts:
    sc-1: {{ansible_host: {sc1}, lab_profile: pi4b}}
    sc-2: {{ansible_host: {sc2}, lab_profile: pi4b}}
    sc-3: {{ansible_host: {sc3}, lab_profile: pi4b}}
  children:
    redis:
      hosts: {{sc-1: , sc-2: , sc-3: }}
      vars:
        redis_kvstore: {{engine: redis, topology: replication, ports: [6379], primary: sc-1, persistence: none,
                         notify_keyspace_events: K$, min_replicas_to_write: 1, min_replicas_max_lag: 5}}
    sentinel:
      hosts: {{sc-1: , sc-2: , sc-3: }}
      vars:
        sentinel_monitors: [{{name: redis, group: redis, port: 6379, primary: sc-1}}]
        sentinel_down_after_milliseconds: 2000
        sentinel_failover_timeout: 6000
    agents:
      hosts:
        sc-3:
          agents_instances:
            - name: observer-1
              kind: observer
              config:
                writer: {{endpoint: {{host: {sc1}, port: 6379, username: agent, password: "{{{{ _redis_agent }}}}"}},
                          rate: 50, count: 100000,
                          sentinel: {{master_name: redis, sentinels: "{{{{ _sentinels }}}}"}}}}
                listeners:
                  - {{name: sc-2-sync, mode: sync,
                      endpoint: {{host: {sc2}, port: 6379, username: agent, password: "{{{{ _redis_agent }}}}"}}}}
                service: {{metrics_port: 9410}}
  vars:
{lab_vars}
    testbed_secrets_dir: {secrets}
    _redis_agent: "{{{{ lookup('ansible.builtin.password', testbed_secrets_dir ~ '/redis-agent', length=32,
                       chars=['ascii_letters', 'digits']) | trim }}}}"
    _sentinel_admin: "{{{{ lookup('ansible.builtin.password', testbed_secrets_dir ~ '/sentinel-admin', length=32,
                          chars=['ascii_letters', 'digits']) | trim }}}}"
    _sentinels: "{{{{ groups['sentinel'] | map('extract', hostvars, 'ansible_host')
                     | map('community.general.dict_kv', 'host')
                     | map('combine', {{'port': 26379, 'password': _sentinel_admin}}) }}}}"
"""

KILL = """
name: lab-kill
description: SIGKILL of the Sentinel-managed primary while both writer strategies write
tags: [lab-test]
needs: {groups: [redis, sentinel]}
warmup: 3s
duration: 40s
agents: [{name: observer-1, kind: observer, host: sc-3}]
writers:
  - {name: default, group: redis, strategy: redis-py, rate: 100}
  - {name: quorum, group: redis, strategy: quorum, rate: 100}
faults:
  - {at: 8, for: 25, kind: kill, group: redis, target: primary}
checks: [lost-writes, read-back, servers-agree]
slo: ["clients.*.unavailability_s <= 30"]
"""

PARTITION = """
name: lab-partition
description: the primary isolated from every other host while both writer strategies write
tags: [lab-test]
needs: {groups: [redis, sentinel]}
warmup: 3s
duration: 40s
writers:
  - {name: default, group: redis, strategy: redis-py, rate: 100}
  - {name: quorum, group: redis, strategy: quorum, rate: 100}
faults:
  - {at: 8, for: 20, kind: partition, group: redis, target: primary, params: {shape: isolate}}
checks: [lost-writes, read-back, servers-agree]
slo: ["clients.quorum.lost == 0"]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp(LAB)
    secrets = work / "secrets"
    inventory = work / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(
        INVENTORY.format(sc1=HOSTS["sc-1"], sc2=HOSTS["sc-2"], sc3=HOSTS["sc-3"], lab_vars=lab_vars(LAB, SUBNET),
                         secrets=secrets)  # fmt: skip
    )
    try:
        up = kvtestbed("lab", "up", "--inventory", str(inventory), timeout=900)
        assert up.returncode == 0, up.stderr[-3000:]
        deploy = kvtestbed("deploy", "--inventory", str(inventory), timeout=1800)
        assert deploy.returncode == 0, (deploy.stdout[-5000:], deploy.stderr[-3000:])
        yield {"inventory": inventory, "secrets": secrets, "work": work}
    finally:
        run_playbook(inventory, "playbooks/lab.yml", "-e", "lab_state=down", check=False, timeout=600)


def run_scenario(lab: dict[str, Any], text: str, name: str) -> tuple[Path, dict[str, Any], str]:
    path = lab["work"] / f"{name}.yml"
    path.write_text(text)
    results = lab["work"] / "results"
    done = kvtestbed("run", str(path), "--inventory", str(lab["inventory"]), "--results", str(results), timeout=600)
    assert done.returncode in (0, 1), (done.stdout[-4000:], done.stderr[-3000:])
    run_dir = max((p for p in results.iterdir() if p.name.endswith(name)), key=lambda p: p.stat().st_mtime)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["status"] in ("passed", "slo-violated"), summary["run"]
    return run_dir, summary, done.stdout


def sentinel_primary(lab: dict[str, Any]) -> tuple[str, int]:
    password = (lab["secrets"] / "sentinel-admin").read_text().strip()
    answers = []
    for address in HOSTS.values():
        with redis.Redis(address, 26379, password=password, socket_timeout=2, decode_responses=True) as s:
            host, port = s.sentinel_get_master_addr_by_name("redis")
            answers.append((host, int(port)))
    assert len(set(answers)) == 1, answers  # the Sentinels agree after the run's heal and settle
    return answers[0]


def independent_lost(lab: dict[str, Any], run_dir: Path, client: str) -> int:
    """Acknowledged writes whose value is not on the primary now, read with a client of the test's own."""
    acked = {}
    for line in (run_dir / "ops" / f"{client}.jsonl").read_text().splitlines():
        op = json.loads(line)
        if op["op"] == "write" and op["result"] == "ok":
            acked[op["key"]] = op["value"]
    assert len(acked) > 500, len(acked)
    host, port = sentinel_primary(lab)
    password = (lab["secrets"] / "redis-agent").read_text().strip()
    keys = sorted(acked)
    with redis.Redis(host, port, username="agent", password=password, decode_responses=True) as node:
        values = [v for i in range(0, len(keys), 500) for v in node.mget(keys[i : i + 500])]
    return sum(value != acked[key] for key, value in zip(keys, values, strict=True))


def check_report(run_dir: Path, tmp_path: Path) -> None:
    with offline_console(tmp_path) as console:
        state = console.open(run_dir / "report.html")
        assert state["hooked"] and state["total"] >= 4 and state["drawn"] == state["total"], state
        assert state["errors"] == [] and console.errors == [] and console.requests == [], (state, console.errors)


def test_a_killed_primary_is_measured_and_agrees_with_the_servers(lab, tmp_path: Path) -> None:
    run_dir, summary, stdout = run_scenario(lab, KILL, "lab-kill")
    (fault,) = summary["faults"]
    assert fault["kind"] == "kill" and fault["hosts"] == ["sc-1"] and fault["verified"], fault
    switches = summary["servers_failover"]
    assert switches and switches[0]["from"].startswith(HOSTS["sc-1"]), switches
    for name in ("default", "quorum"):
        client = summary["clients"][name]
        assert client["strategy"] == {"default": "redis-py", "quorum": "quorum"}[name]
        assert client["lost"] == independent_lost(lab, run_dir, name), client
        # the client's failover follows the Sentinels' switch (it cannot come before the servers switch)
        assert client["failover_s"] is not None and client["failover_to"], client
        servers_s = switches[0]["t"] - fault["t_inject"]
        assert servers_s - 0.5 <= client["failover_s"] <= servers_s + 5, (client, switches)
        assert client["unavailability_s"] >= client["failover_s"] - servers_s - 0.5
    # the agent ran for the run only: its figures are in the summary, its unit is stopped again
    assert summary["load"]["agents.observer-1.writer.writes"] > 0, summary["load"]
    assert (run_dir / "raw" / "agents" / "observer-1.json").is_file()
    state = ssh(HOSTS["sc-3"], KEY, "systemctl is-active kvtestbed-agent@observer-1").stdout.strip()
    assert state == "inactive"
    assert "lab-kill:" in stdout and "report:" in stdout
    check_report(run_dir, tmp_path)


def test_a_partitioned_primary_is_measured_per_strategy_and_healed(lab, tmp_path: Path) -> None:
    run_dir, summary, _ = run_scenario(lab, PARTITION, "lab-partition")
    (fault,) = summary["faults"]
    assert fault["kind"] == "partition" and fault["healed"] and fault["verified"], fault
    for name in ("default", "quorum"):
        assert summary["clients"][name]["lost"] == independent_lost(lab, run_dir, name)
    # nothing of the fault is left on any host
    for address in HOSTS.values():
        tables = ssh(address, KEY, "nft list tables").stdout
        assert "kvtestbed_fault" not in tables, (address, tables)
    check_report(run_dir, tmp_path)
