"""`kvtestbed run` refuses a bad `node` writer or `conflicts` check with one line and exit 2, before anything starts.

The real CLI against a real inventory file whose KeyDB mesh hosts are addresses nothing owns: a refusal must come
before any host is contacted (and writes no results folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.lab import kvtestbed

pytestmark = pytest.mark.integration

SCENARIO = """
name: mesh-refusal
needs: {groups: [keydb], engines: {keydb: keydb}, topologies: {keydb: mesh}}
duration: 20s
writers:
  - {name: a, group: keydb, strategy: node, host: pi-1, rate: 50, key_prefix: "kvt:m:", keys: 50}
  - {name: b, group: keydb, strategy: node, host: pi-3, rate: 50, key_prefix: "kvt:m:", keys: 50}
faults: [{at: 5, for: 10, kind: partition, group: keydb, target: pi-3, params: {shape: isolate}}]
checks: [lost-writes, conflicts]
slo: ["accounting.conflicts.diverged == 0"]
"""

INVENTORY = """
all:
  hosts:
    pi-1: {ansible_host: 198.18.251.11, ansible_user: root}
    pi-2: {ansible_host: 198.18.251.12, ansible_user: root}
    pi-3: {ansible_host: 198.18.251.13, ansible_user: root}
    pc-1: {ansible_host: 198.18.251.21, ansible_user: root}
  children:
    keydb:
      hosts: {pi-1: , pi-2: , pi-3: }
      vars:
        keydb_kvstore: {engine: keydb, topology: mesh, ports: [6381]}
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    scenario = tmp_path / "mesh-refusal.yml"
    scenario.write_text(SCENARIO)
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(INVENTORY)
    return {"scenario": scenario, "inventory": inventory}


@pytest.mark.parametrize(("override", "expected"), [
    ("writers.0.host=null", "writers[0].host: required with strategy node: the host of the group it writes to"),
    ("writers.1.host=pc-1", "writers[1].host: host 'pc-1' is not in group 'keydb' (pi-1, pi-2, pi-3)"),
    ("writers.1.keys=null", "checks[1]: conflicts compares writes of shared keys: give two writers of one group the "
                            "same key_prefix and keys (e.g. keys: 100)"),
], ids=["node without host", "host not in the group", "conflicts without shared keys"])  # fmt: skip
def test_refused_with_one_line_and_exit_2(tmp_path: Path, files: dict[str, Path], override: str, expected: str) -> None:
    results = tmp_path / "results"
    done = kvtestbed("run", str(files["scenario"]), "--inventory", str(files["inventory"]), "--results",
                     str(results), "--metrics-port", "0", "--set", override, timeout=120)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].endswith(expected), lines[0]
    assert str(files["scenario"]) in lines[0]
    assert not results.exists() or not any(results.iterdir())
