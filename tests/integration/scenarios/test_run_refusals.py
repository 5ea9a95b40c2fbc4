"""`kvtestbed run` refuses bad input with one line and exit 2, before anything starts (no results folder).

Runs the real CLI against real inventories; the host that "does not answer" is an address of the benchmarking range
that nothing on this machine owns, so SSH to it fails for real (the one slow case: ssh's ConnectTimeout, 5 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.lab import kvtestbed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

SCENARIO = """
name: refusal
needs: {groups: [redis, sentinel]}
duration: 10s
writers: [{name: w, group: redis, strategy: quorum, rate: 10}]
faults: [{at: 2, for: 3, kind: pause, group: redis, target: primary}]
"""

INVENTORY = """
all:
  hosts:
    gone-1: {ansible_host: 198.18.250.11, ansible_user: root}
  children:
    redis:
      hosts: {gone-1: }
      vars:
        redis_kvstore: {engine: redis, topology: replication, ports: [6379], primary: gone-1}
    sentinel:
      hosts: {gone-1: }
      vars:
        sentinel_monitors: [{name: redis, group: redis, port: 6379, primary: gone-1}]
"""


def refused(tmp_path: Path, *args: str) -> str:
    results = tmp_path / "results"
    done = kvtestbed("run", *args, "--metrics-port", "0", "--results", str(results), timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert not results.exists() or not any(results.iterdir())  # nothing started, nothing written
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    scenario = tmp_path / "refusal.yml"
    scenario.write_text(SCENARIO)
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(INVENTORY)
    return {"scenario": scenario, "inventory": inventory}


def test_a_missing_scenario_file(tmp_path: Path, files: dict[str, Path]) -> None:
    line = refused(tmp_path, str(tmp_path / "nope.yml"), "--inventory", str(files["inventory"]))
    assert "nope.yml" in line


def test_an_inventory_without_the_groups_the_scenario_needs(tmp_path: Path, files: dict[str, Path]) -> None:
    line = refused(tmp_path, str(files["scenario"]), "--inventory", str(ROOT / "inventory" / "example-hardware"),
                   "--set", "needs.groups=[redis, nosuchgroup]")  # fmt: skip
    assert "nosuchgroup" in line


def test_a_fault_after_the_end(tmp_path: Path, files: dict[str, Path]) -> None:
    line = refused(tmp_path, str(files["scenario"]), "--inventory", str(files["inventory"]), "--set", "faults.0.at=9")
    assert "faults[0]" in line and "end" in line


def test_a_host_that_does_not_answer(tmp_path: Path, files: dict[str, Path]) -> None:
    line = refused(tmp_path, str(files["scenario"]), "--inventory", str(files["inventory"]))
    assert "gone-1" in line and "198.18.250.11" in line
