"""Locust in the lab, deployed by `kvtestbed deploy`, driven from its web UI by a real browser (seed 000's page).

A lab of its own (lab_name ldlab, 198.18.63.0/24, two emulated PCs):
  ld-1  redis-server (the target and the expiry ledger), nats-server with JetStream, the expiry agents
        (a consumer with store dedup and two workers on a WorkQueue stream)
  ld-2  the Locust master (web UI :8089 behind the login, password in secrets/locust-web-password) and two workers

`kvtestbed deploy --inventory` converges site.yml on it. Headless Chromium on the controller then logs in, checks
that the master counts both workers, fills the start form with the workload's parameters (number of keys, TTL,
delay), starts the run, reads the Workload tab until the final audit (generated = keys, lost 0, no duplicate
processing) and sees the run stop by itself.

    .venv/bin/pytest -m lab tests/lab/test_load_lab.py -s            # needs root
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.browser import chromium, click_start, click_tab, fetch_json, login, run_stopped, table_rows
from tests.support.expiry_agents import lossless_run_cells
from tests.support.lab import kvtestbed, run_playbook, ssh
from tests.support.wait import wait_until

LAB = "ldlab"
SUBNET = "198.18.63"
HOSTS = {"ld-1": f"{SUBNET}.11", "ld-2": f"{SUBNET}.12"}
KEY = f"/var/lib/kvtestbed/lab/{LAB}/ssh/id_ed25519"
KEYS, TTL_MS, DELAY_MS, USERS = 300, 1000, 20, 4
RUN_ID = "ldlab"

INVENTORY = """---
all:
  hosts:
    ld-1: {{ansible_host: {ld1}, lab_profile: pc}}
    ld-2: {{ansible_host: {ld2}, lab_profile: pc}}
  children:
    redis:
      hosts: {{ld-1: }}
      vars:
        redis_kvstore: {{engine: redis, topology: standalone, ports: [6379], persistence: none,
                         notify_keyspace_events: Ex}}
    nats:
      hosts: {{ld-1: }}
      vars:
        nats_install_method: pypi
        nats_pypi_version: "2.15.1"
        nats_accounts: [{{name: APP, jetstream: true, users: [{{user: agent}}]}}]
    agents:
      hosts:
        ld-1:
          # the expiry agents consume what Locust's ExpiryKeysUser writes: they run from deploy on
          agents_state: started
          agents_instances:
            - {{name: expiry-consumer, kind: expiry,
                config: "{{{{ _expiry | combine({{'role': 'consumer', 'consumer': {{'name': 'c0', 'dedup': 'store'}},
                                                'service': {{'metrics_port': 9412}}}}) }}}}"}}
            - {{name: expiry-worker-1, kind: expiry,
                config: "{{{{ _expiry | combine({{'role': 'worker', 'worker': {{'name': 'w1'}},
                                                'service': {{'metrics_port': 9413}}}}) }}}}"}}
            - {{name: expiry-worker-2, kind: expiry,
                config: "{{{{ _expiry | combine({{'role': 'worker', 'worker': {{'name': 'w2'}},
                                                'service': {{'metrics_port': 9414}}}}) }}}}"}}
    loadgen:
      hosts:
        ld-2:
          locust_role: master
          locust_password_files: [redis-agent]
          locust_default_host: redis://agent@{ld1}:6379
          locust_user_classes: [ExpiryKeysUser]
          locust_class_picker: false
          locust_extra_config: |
            kvt-password-file = /etc/kvtestbed/locust/secrets/redis-agent
            kvt-expiry-ledger = redis://agent@{ld1}:6379
            kvt-expiry-run-id = {run_id}
            kvt-agents = http://{ld1}:9412,http://{ld1}:9413,http://{ld1}:9414
    loadgen_workers:
      hosts:
        ld-2: {{locust_workers: 2}}
  vars:
    lab_name: {lab}
    lab_bridge: kvtb-{lab}
    lab_subnet: {subnet}.0/24
    lab_gateway: {subnet}.1
    ansible_user: root
    ansible_ssh_private_key_file: {key}
    ansible_host_key_checking: false
    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    testbed_subnet: {subnet}.0/24
    common_ntp_servers: [{subnet}.1]
    common_in_lab: true
    testbed_secrets_dir: {secrets}
    _redis_agent: "{{{{ lookup('ansible.builtin.password', testbed_secrets_dir ~ '/redis-agent', length=32,
                       chars=['ascii_letters', 'digits']) | trim }}}}"
    _nats_agent: "{{{{ lookup('ansible.builtin.password', testbed_secrets_dir ~ '/nats_agent', length=32,
                      chars=['ascii_letters', 'digits']) | trim }}}}"
    _expiry:
      run_id: {run_id}
      ledger: {{host: {ld1}, port: 6379, username: agent, password: "{{{{ _redis_agent }}}}"}}
      target:
        mode: nodes
        nodes: [{{host: {ld1}, port: 6379, username: agent, password: "{{{{ _redis_agent }}}}"}}]
      nats: {{servers: ["nats://{ld1}:4222"], user: agent, password: "{{{{ _nats_agent }}}}"}}
      stream: {{name: KVT_EXPIRY, subject: kvt.expiry, replicas: 1, duplicate_window_s: 60}}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp(LAB)
    secrets = work / "secrets"
    inventory = work / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(
        INVENTORY.format(ld1=HOSTS["ld-1"], ld2=HOSTS["ld-2"], lab=LAB, subnet=SUBNET, key=KEY, secrets=secrets,
                         run_id=RUN_ID)  # fmt: skip
    )
    try:
        up = kvtestbed("lab", "up", "--inventory", str(inventory), timeout=900)
        assert up.returncode == 0, up.stderr[-3000:]
        deploy = kvtestbed("deploy", "--inventory", str(inventory), timeout=1800)
        assert deploy.returncode == 0, (deploy.stdout[-5000:], deploy.stderr[-3000:])
        yield {"inventory": inventory, "secrets": secrets, "work": work}
    finally:
        run_playbook(inventory, "playbooks/lab.yml", "-e", "lab_state=down", check=False, timeout=600)


def test_deploy_starts_the_master_and_its_workers(lab) -> None:
    units = ssh(HOSTS["ld-2"], KEY, "systemctl is-active kvtestbed-locust-master kvtestbed-locust-worker@1 "
                "kvtestbed-locust-worker@2").stdout.split()  # fmt: skip
    assert units == ["active"] * 3, units
    # the password is nowhere on a command line
    password = (lab["secrets"] / "locust-web-password").read_text().strip()
    assert password and password not in ssh(HOSTS["ld-2"], KEY, "ps -eo args").stdout


def test_seed_000_from_the_web_ui_in_the_lab(lab, tmp_path: Path) -> None:
    password = (lab["secrets"] / "locust-web-password").read_text().strip()
    url = f"http://{HOSTS['ld-2']}:8089"
    with chromium(tmp_path) as tools:
        login(tools, url, "admin", password, "input[name=kvtExpiryKeys]", timeout_s=30)

        def workers() -> int:
            return int(fetch_json(tools, "/stats/requests").get("worker_count", 0))

        assert wait_until(lambda: workers() == 2, 30, 0.5, "both workers connected")
        for name, value in (("userCount", USERS), ("spawnRate", USERS), ("kvtExpiryKeys", KEYS),
                            ("kvtExpiryTtlMs", TTL_MS), ("kvtExpiryDelayMs", DELAY_MS)):  # fmt: skip
            tools.set_input(name, str(value))
        click_start(tools)

        def workload_rows() -> dict[tuple[str, str], str] | None:
            click_tab(tools, "workload")
            cells = {key: row[2] for key, row in table_rows(tools).items()}
            return cells if cells.get(("expiry run", "phase")) == "final" else None

        cells = wait_until(workload_rows, 180, 1.0, "the final audit in the Workload tab")
        wait_until(lambda: run_stopped(tools), 30, 0.5, "the run stopped by itself")
    shown = {f"{s}: {f}": v for (s, f), v in cells.items() if s in ("expiry run", "ledger audit")}
    print("\nLAB WEBUI", json.dumps(shown))
    expected = lossless_run_cells(KEYS, TTL_MS)
    assert {key: cells.get(key) for key in expected} == expected
    shares = [int(cells[(f"worker {w}", "processed")]) for w in ("w1", "w2")]
    assert sum(shares) == KEYS


HOSTS_LOAD = """
name: ldlab-hosts-load
description: seed 000's keys from the deployed master's two workers, started and read by the scenario runner
tags: [lab-test]
needs: {{groups: [redis, loadgen]}}
warmup: 0s
duration: 60s
load:
  from: hosts
  users: [ExpiryKeysUser]
  count: {users}
  target: redis
  options: {{expiry-keys: {keys}, expiry-ttl-ms: {ttl_ms}, expiry-delay-ms: {delay_ms}, expiry-run-id: {run_id}}}
"""


def test_the_scenario_runner_drives_the_deployed_master_and_its_workers(lab, tmp_path: Path) -> None:
    """`load.from: hosts`: the load comes from the loadgen host's workers, not from the controller; the run's summary
    holds Locust's figures, the master's Workload tab its lossless audit."""
    scenario = lab["work"] / "hosts-load.yml"
    scenario.write_text(HOSTS_LOAD.format(users=USERS, keys=KEYS, ttl_ms=TTL_MS, delay_ms=DELAY_MS, run_id=RUN_ID))
    results = tmp_path / "results"
    done = kvtestbed("run", str(scenario), "--inventory", str(lab["inventory"]), "--results", str(results),
                     "--metrics-port", "0", timeout=600)  # fmt: skip
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-3000:])
    (run_dir,) = list(results.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    load = summary["load"]
    raw = run_dir / "raw" / "locust"
    stats = json.loads((raw / "stats.json").read_text())
    rows = json.loads((raw / "workload.json").read_text())["rows"]
    cells = {(r["section"], r["figure"]): str(r["run"]) for r in rows}
    sets = {(r["method"], r["name"]): (r["num_requests"], r["num_failures"]) for r in stats["stats"]}
    # what to look at when it fails: Locust's table as the master kept it, the tab, the runner's events
    seen = {"sets": sets, "tab": {f"{a}: {b}": c for (a, b), c in cells.items()}, "state": stats.get("state"),
            "events": (run_dir / "timeline.jsonl").read_text()[-3000:]}
    print("\nLAB HOSTS LOAD", json.dumps({k: v for k, v in load.items() if k.endswith((".count", "workers"))}))
    assert load["locust.workers"] == 2 and load["locust.failures"] == 0, (load, seen)
    # every key came from the master's workers: the SETs Locust timed are the keys the ledger audited
    assert sets.get(("SET", "expiry"), (0, 0))[0] == KEYS, seen
    expected = lossless_run_cells(KEYS, TTL_MS)
    assert {key: cells.get(key) for key in expected} == expected, seen
    # the Workload tab's audit as figures an SLO can name
    assert load["locust.workload.ledger_audit.generated"] == KEYS and load["locust.workload.ledger_audit.lost"] == 0
    # nothing ran on the controller: no Locust process of the runner's, its load.json names the master
    assert json.loads((raw / "load.json").read_text())["from"] == "ld-2"
