"""Bad input to the key-value roles fails in preflight with one line naming the variable (no lab needed).

Every case is a host of its own, all on the controller (ansible_connection local); one ansible-playbook run of
playbooks/redis.yml and playbooks/keydb.yml with only the *_preflight tags; the JSON callback tells which task
failed on which host and why. One case also goes through the kvtestbed CLI: exit 2 (bad input), one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"

INVENTORY = """---
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    testbed_subnet: 127.0.0.0/8
  hosts:
    bad-engine: {ansible_host: 127.0.0.11, redis_kvstore: {engine: memcached}}
    bad-topology: {ansible_host: 127.0.0.12, redis_kvstore: {engine: redis, topology: ring}}
    bad-primary: {ansible_host: 127.0.0.13, redis_kvstore: {engine: redis, topology: replication, primary: ghost-9}}
    bad-knob: {ansible_host: 127.0.0.14, redis_kvstore: {engine: redis, maxmem: 1gb}}
    small-cluster: {ansible_host: 127.0.0.15}
    big-quorum: {ansible_host: 127.0.0.16}
    no-keydb: {ansible_host: 127.0.0.17}
  children:
    redis:
      hosts: {bad-engine: , bad-topology: , bad-primary: , bad-knob: }
    redis_cluster:
      hosts: {small-cluster: }
      vars:
        redis_cluster_kvstore: {engine: redis, topology: cluster, ports: [7000, 7001]}
    sentinel:
      hosts: {big-quorum: }
      vars:
        sentinel_monitors: [{name: redis, group: redis, port: 6379, primary: bad-engine, quorum: 3}]
    keydb:
      hosts: {no-keydb: , big-quorum: }
      vars:
        keydb_kvstore: {engine: keydb, topology: mesh, ports: [6381]}
"""

EXPECTED = {
    "bad-engine": "kvstore_engine: 'memcached'",
    "bad-topology": "kvstore_topology: 'ring'",
    "bad-primary": "kvstore_primary: 'ghost-9'",
    "bad-knob": "kvstore_settings: unknown key(s) maxmem",
    "small-cluster": "a Cluster needs at least 3 masters",
    "big-quorum": "sentinel_quorum (sentinel_monitors[redis].quorum): 3",
    "no-keydb": "kvstore_keydb_source_archive is empty",
}


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": f"{BIN}:{os.environ['PATH']}",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kvpre") / "hosts.yml"
    path.write_text(INVENTORY)
    return path


def _failures(inventory: Path, playbook: str, limit: str, tmp_path: Path) -> dict[str, tuple[str, list[str], str]]:
    # one run per group: a play whose hosts all fail ends the playbook
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / playbook),
                           "--tags", "kvstore_preflight,sentinel_preflight", "--limit", limit,
                           "-e", f"testbed_secrets_dir={tmp_path / 'secrets'}"],
                          cwd=ROOT, env={**_env(tmp_path), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"},
                          capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    failed = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if result.get("failed") and host not in failed:
                    items = [r for r in result.get("results", []) if r.get("failed")]
                    msg = items[0].get("msg", "") if items else result.get("msg", "")
                    failed[host] = (task["task"]["name"], task["task"].get("tags", []), msg)
    return failed


def test_bad_input_fails_preflight_naming_the_variable(inventory, tmp_path):
    failed = {}
    for playbook, limit in (("redis.yml", "redis"), ("redis.yml", "redis_cluster"), ("redis.yml", "sentinel"),
                            ("keydb.yml", "keydb")):
        for host, failure in _failures(inventory, playbook, limit, tmp_path).items():
            failed.setdefault(host, failure)
    for host, expected in EXPECTED.items():
        assert host in failed, f"{host}: no failure (expected: {expected})"
        _, _, msg = failed[host]
        assert expected in msg, f"{host}: {msg!r} does not name {expected!r}"
        assert "\n" not in msg.strip(), f"{host}: not one line: {msg!r}"


def test_cli_reports_bad_input_in_one_line(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text(INVENTORY.replace("bad-engine: , bad-topology: , bad-primary: , bad-knob: ", "bad-engine: "))
    proc = subprocess.run([sys.executable, "-m", "kvtestbed.cli", "deploy", "--inventory", str(inv),
                           "--playbook", "redis.yml", "--limit", "bad-engine", "--tags", "kvstore_preflight"],
                          cwd=ROOT, env={**_env(tmp_path), "KVTESTBED_HOME": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    last = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-1]
    assert last.startswith("kvtestbed deploy: kvstore_engine: 'memcached'"), proc.stdout + proc.stderr
