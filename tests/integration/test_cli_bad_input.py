"""Bad input to `kvtestbed lab up` is one line naming the problem, exit 2, and changes nothing on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KVTESTBED = [sys.executable, "-m", "kvtestbed.cli"]
BRIDGE = "kvtb-badinput"

pytestmark = pytest.mark.integration

GROUP_VARS = f"""
lab_name: badinput
lab_bridge: {BRIDGE}
lab_subnet: 198.18.41.0/24
lab_gateway: 198.18.41.1
"""


def write_inventory(tmp_path: Path, hosts_yaml: str) -> Path:
    inventory = tmp_path / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(hosts_yaml)
    (inventory / "group_vars" / "all.yml").write_text(GROUP_VARS)
    return inventory


def run_cli(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [*KVTESTBED, *args]
    if user:
        argv = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups", *argv]
    env = dict(os.environ, KVTESTBED_HOME=str(ROOT), HOME="/tmp")
    return subprocess.run(argv, capture_output=True, text=True, cwd="/", env=env, timeout=120)


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


BAD = {
    "no address": ("all:\n  hosts:\n    pi-1: {lab_profile: pi4b}\n",
                   "host pi-1: no address; set ansible_host"),
    "shared address": ("all:\n  hosts:\n    pi-1: {ansible_host: 198.18.41.11, lab_profile: pi4b}\n"
                       "    pi-2: {ansible_host: 198.18.41.11, lab_profile: pi4b}\n",
                       "hosts pi-1 and pi-2 share ansible_host 198.18.41.11"),
    "outside subnet": ("all:\n  hosts:\n    pi-1: {ansible_host: 10.1.2.3, lab_profile: pi4b}\n",
                       "ansible_host 10.1.2.3 is outside lab_subnet 198.18.41.0/24"),
    "unknown profile": ("all:\n  hosts:\n    pi-1: {ansible_host: 198.18.41.11, lab_profile: pi5}\n",
                        "unknown lab_profile 'pi5'"),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab's preflight runs as root")
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inventory_is_one_line_and_changes_nothing(tmp_path, case):
    hosts_yaml, expected = BAD[case]
    proc = run_cli("lab", "up", "--inventory", str(write_inventory(tmp_path, hosts_yaml)))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvtestbed lab up: invalid lab inventory: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not bridge_exists()
    assert not Path("/var/lib/kvtestbed/lab/badinput").exists()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_not_root_is_one_line(tmp_path):
    inventory = write_inventory(tmp_path, "all:\n  hosts:\n    pi-1: {ansible_host: 198.18.41.11, lab_profile: pi4b}\n")
    tmp_path.chmod(0o755)
    proc = run_cli("lab", "up", "--inventory", str(inventory), user="65534")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("kvtestbed lab up: kvtestbed lab up needs root (it creates a bridge, nftables "
                                   "rules and containers): run it as root")
    assert not bridge_exists()


def test_missing_inventory_is_one_line():
    proc = run_cli("deploy", "--inventory", "/nonexistent/inventory")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("kvtestbed deploy: inventory /nonexistent/inventory does not exist")


def test_unknown_lab_action_is_usage_error():
    proc = run_cli("lab", "sideways")
    assert proc.returncode == 2 and "invalid choice: 'sideways'" in proc.stderr
