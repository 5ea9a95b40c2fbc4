"""Bad monitoring input fails playbooks/monitoring.yml on the controller, before anything is deployed, with one line:
no host in the `monitoring` group (the Prometheus play would otherwise be skipped without a word) and two
targets on one address:port. No host is contacted (the inventories' hosts are never reached: the check runs first).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.ansible_json import run_tagged

ROOT = Path(__file__).resolve().parents[2]

BASE = """---
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  hosts:
    h-1: {ansible_host: 127.0.0.11, redis_kvstore: {engine: redis, ports: [6379]}}
    h-2:
      ansible_host: 127.0.0.12
      agents_instances: [{name: obs, kind: observer, config: {service: {metrics_port: PORT}}}]
  children:
    redis: {hosts: {h-1: }}
    agents: {hosts: {h-2: }}
"""


def _preflight(tmp_path: Path, inventory: str) -> tuple[list[str], dict[str, str]]:
    """The plays that ran and {task name: message} of every failed task of a --tags prometheus_preflight run."""
    returncode, report = run_tagged(tmp_path, ROOT / "playbooks" / "monitoring.yml", inventory,
                                    "prometheus_preflight")  # fmt: skip
    assert returncode != 0, json.dumps(report)[-3000:]
    failed = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            for result in task["hosts"].values():
                if result.get("failed"):
                    failed[task["task"]["name"]] = result["msg"]
    return [play["play"]["name"] for play in report["plays"]], failed


@pytest.mark.parametrize(
    ("inventory", "expected"),
    [
        (BASE.replace("PORT", "9410"), "inventory group 'monitoring' has no hosts: add the host that runs Prometheus"),
        (
            BASE.replace("PORT", "9100") + "    monitoring: {hosts: {h-1: }}\n",
            "target 127.0.0.12:9100 is claimed twice: node (host h-2) and agent obs (host h-2); "
            "give one of them another port",
        ),
        (
            BASE.replace("PORT", "36379").replace("redis: {hosts: {h-1: }}", "redis: {hosts: {h-1: , h-2: }}")
            + "    monitoring: {hosts: {h-1: }}\n",
            "target 127.0.0.12:36379 is claimed twice: redis exporter of redis port 6379 (host h-2) and "
            "agent obs (host h-2)",
        ),
    ],
    ids=["no-monitoring-host", "agent-on-the-node-exporter-port", "agent-on-an-exporter-port"],
)
def test_bad_monitoring_input_fails_first_with_one_line(tmp_path: Path, inventory: str, expected: str) -> None:
    plays, failed = _preflight(tmp_path, inventory)
    # the role's check, run by the playbook's first play (on the controller): nothing else ran, nothing else failed
    assert plays == ["Check the monitoring inventory"]
    assert list(failed) == [
        "prometheus : Assert the targets are sound (Prometheus hosts exist, no two targets on one address:port)"
    ]
    message = next(iter(failed.values()))
    assert message.startswith(expected) and "\n" not in message.strip(), message
