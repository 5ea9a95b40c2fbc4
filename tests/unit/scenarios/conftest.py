"""Shared fixtures of the scenario model's tests: a valid scenario to break one field at a time, and the lab
inventory as check_against takes it (by hand, and once for real from ansible-inventory)."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]

VALID: dict[str, Any] = {
    "name": "t",
    "description": "a scenario every test breaks in one place",
    "tags": ["unit"],
    "duration": 60,
    "warmup": 5,
    "needs": {"groups": ["redis", "sentinel"], "engines": {"redis": "redis"}, "topologies": {"redis": "replication"}},
    "writers": [
        {"name": "w1", "group": "redis", "strategy": "redis-py", "rate": 100},
        {"name": "w2", "group": "redis", "strategy": "quorum", "rate": 100},
    ],
    "agents": [{"name": "observer-1", "kind": "observer", "host": "pc-1", "config": {"writer": {"rate": 100}}}],
    "load": {"users": ["KvSetUser"], "count": 4, "rate": "constant:rate=100,for=70", "target": "redis"},
    "faults": [
        {"at": 10, "for": 20, "kind": "partition", "group": "redis", "target": "primary"},
        {"at": 40, "kind": "kill", "group": "redis", "target": "primary"},
    ],
    "checks": ["lost-writes"],
    "slo": ["clients.*.lost == 0", {"figure": "clients.w2.failover_s", "op": "<=", "threshold": 15}],
}


@pytest.fixture
def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[[Any], Path]:
    """Write a mapping (dumped as YAML) or a string (as is) to t.yml; returns its path."""

    def write(content: Any, filename: str = "t.yml") -> Path:
        path = tmp_path / filename
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


# The lab inventory (inventory/lab) in check_against's shape, written by hand for speed; test_lab_inventory_shape
# keeps it in step with the real one.
LAB_GROUPS: dict[str, list[str]] = {
    "pis": ["pi-1", "pi-2", "pi-3"],
    "pcs": ["pc-1", "pc-2"],
    "lab": ["pi-1", "pi-2", "pi-3", "pc-1", "pc-2"],
    "redis": ["pi-1", "pi-2", "pi-3"],
    "sentinel": ["pi-1", "pi-2", "pi-3"],
    "valkey": ["pc-1", "pc-2"],
    "redis_cluster": ["pi-1", "pi-2", "pi-3"],
    "nats": ["pc-1", "pc-2", "pi-3"],
    "keydb": ["pi-1", "pi-2", "pi-3"],
    "agents": ["pc-1", "pc-2", "pi-1"],
    "loadgen": ["pc-2"],
    "loadgen_workers": ["pc-2"],
    "monitoring": ["pc-1"],
}
LAB_VARS: dict[str, dict[str, Any]] = {
    "redis": {"redis_kvstore": {"engine": "redis", "topology": "replication", "ports": [6379], "primary": "pi-1"}},
    "sentinel": {"sentinel_monitors": [{"name": "redis", "group": "redis", "port": 6379, "primary": "pi-1"}]},
    "valkey": {"valkey_kvstore": {"engine": "valkey", "topology": "replication", "ports": [6380], "primary": "pc-1"}},
    "redis_cluster": {"redis_cluster_kvstore": {"engine": "redis", "topology": "cluster", "ports": [7000, 7001]}},
    "keydb": {"keydb_kvstore": {"engine": "keydb", "topology": "mesh", "ports": [6381]}},
    "nats": {"nats_cluster_group": "nats"},
}


@pytest.fixture
def lab_inventory() -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    return copy.deepcopy(LAB_GROUPS), copy.deepcopy(LAB_VARS)


def inventory_view(listing: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """`ansible-inventory --list` -> ({group: hosts, children included}, {group: hostvars of its first host})."""
    hostvars = listing.get("_meta", {}).get("hostvars", {})

    def hosts_of(group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        entry = listing.get(group, {})
        found = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            if child not in seen:  # a cycle cannot occur in Ansible, the guard keeps the walk bounded anyway
                found += [h for h in hosts_of(child, seen | {group}) if h not in found]
        return found

    groups = {name: hosts_of(name) for name in listing if name != "_meta"}
    return groups, {name: dict(hostvars.get(hosts[0], {})) if hosts else {} for name, hosts in groups.items()}


@pytest.fixture(scope="session")
def real_lab_inventory() -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """inventory/lab as Ansible reads it (one ansible-inventory run, about 1.5 s)."""
    proc = subprocess.run([str(ROOT / ".venv/bin/ansible-inventory"), "-i", str(ROOT / "inventory/lab"), "--list"],
                          capture_output=True, text=True, timeout=120, check=True, cwd=ROOT)
    return inventory_view(json.loads(proc.stdout))
