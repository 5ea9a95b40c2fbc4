"""Bad input to the exporters role fails in preflight with one line naming what to fix (no lab needed).

Every case is a host of its own, all on the controller (ansible_connection local); one ansible-playbook run of the
role with only its preflight tag; the JSON callback tells which task failed on which host and why.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.ansible_json import run_tagged

AGENTS = Path(__file__).resolve().parents[2] / "agents"

PLAY = """---
- name: Exporters as playbooks/monitoring.yml applies them
  hosts: all
  roles:
    - role: exporters
      exporters_kv_groups: [redis, valkey, redis_cluster, keydb]
      exporters_sentinel_group: sentinel
      exporters_nats_group: nats
"""

INVENTORY = """---
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    testbed_subnet: 127.0.0.0/8
    # the play runs from a temporary directory: the collector's source is the checkout's
    exporters_agents_project_dir: "@AGENTS@"
  hosts:
    no-ports: {ansible_host: 127.0.0.11, redis_kvstore: {engine: redis}}
    no-settings: {ansible_host: 127.0.0.12}
    big-port: {ansible_host: 127.0.0.13}
    clash: {ansible_host: 127.0.0.14, redis_kvstore: {ports: [6379]}, keydb_kvstore: {ports: [6379]}}
    sentinel-clash: {ansible_host: 127.0.0.15, sentinel_port: 6380, valkey_kvstore: {ports: [6380]}}
    bad-args: {ansible_host: 127.0.0.16, exporters_redis_extra_args: ["--check-keys=a b"]}
    keydb-off: {ansible_host: 127.0.0.17, redis_kvstore: {ports: [6379]}, keydb_deploy: false}
    nats-no-monitor: {ansible_host: 127.0.0.18, nats_http_port: 0}
    nats-port-clash: {ansible_host: 127.0.0.19, exporters_nats_port: 8222}
    nats-bad-port: {ansible_host: 127.0.0.20, exporters_nats_port: 70000}
    nats-no-source: {ansible_host: 127.0.0.21, exporters_agents_project_dir: /nonexistent}
  children:
    nats: {hosts: {nats-no-monitor: , nats-port-clash: , nats-no-source: }}
    redis: {hosts: {no-ports: , clash: , keydb-off: }}
    valkey: {hosts: {no-settings: , sentinel-clash: }}
    redis_cluster:
      hosts: {big-port: }
      vars: {redis_cluster_kvstore: {engine: redis, topology: cluster, ports: [7000, 40000]}}
    keydb: {hosts: {clash: , keydb-off: }}
    sentinel: {hosts: {sentinel-clash: , keydb-off: }}
"""

EXPECTED = {
    "no-ports": "redis_kvstore: no instance ports for group redis",
    "no-settings": "valkey_kvstore: no instance ports for group valkey",
    "big-port": "puts the exporter of redis_cluster-40000 (port 70000) on big-port outside 1-65535",
    "clash": "port 6379 (redis-6379, keydb-6379); port 36379 (exporter of redis-6379, exporter of keydb-6379)",
    "sentinel-clash": "port 6380 (valkey-6380, sentinel-6380)",
    "bad-args": "exporters_node_extra_args / exporters_redis_extra_args: --check-keys=a b",
    "nats-no-monitor": "nats_http_port: 0 on nats-no-monitor turns NATS monitoring off",
    "nats-port-clash": "port 8222 (NATS collector, NATS server (nats_http_port))",
    "nats-bad-port": "exporters_nats_port: 70000 is not a TCP port",
    "nats-no-source": "/nonexistent/kvagent/exporters/nats.py must exist",
}


def test_bad_input_fails_preflight_in_one_line(tmp_path):
    (tmp_path / "play.yml").write_text(PLAY)
    _, report = run_tagged(tmp_path, tmp_path / "play.yml", INVENTORY.replace("@AGENTS@", str(AGENTS)),
                           "exporters_preflight")
    failed: dict[str, str] = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if result.get("failed") and host not in failed:
                    items = [r for r in result.get("results", []) if r.get("failed")]
                    failed[host] = items[0].get("msg", "") if items else result.get("msg", "")
    for host, expected in EXPECTED.items():
        assert host in failed, f"{host}: no failure (expected: {expected})"
        assert expected in failed[host], f"{host}: {failed[host]!r} does not say {expected!r}"
        assert "\n" not in failed[host].strip(), f"{host}: not one line: {failed[host]!r}"
    # a group turned off (keydb_deploy: false, no keydb_kvstore) is skipped, not an error: this host passes every
    # input check and may fail only because the controller is not a systemd host
    if "keydb-off" in failed:
        assert failed["keydb-off"].startswith("host keydb-off: exporters needs Debian"), failed["keydb-off"]
    # nothing was generated: preflight reads no secret
    assert not (tmp_path / "secrets").exists()
