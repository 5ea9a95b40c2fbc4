"""Bad input to `kvtestbed lab up` is one line naming the problem, exit 2, and changes nothing on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.binaries import require, unavailable

ROOT = Path(__file__).resolve().parents[2]
KVTESTBED = [sys.executable, "-m", "kvtestbed.cli"]
BRIDGE = "kvtb-badinput"
NON_ROOT = 1000

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


def as_non_root(argv: list[str]) -> list[str]:
    """argv in a new user namespace where the process is uid/gid 1000, not root, while outside it is still the
    caller, who owns the checkout: it imports the package from a clone only root may read (a 0700 clone under
    /root), which a real other user (setpriv to nobody) cannot."""
    unshare = require(shutil.which("unshare"), "unshare (util-linux)")
    return [unshare, "--user", f"--map-user={NON_ROOT}", f"--map-group={NON_ROOT}", *argv]


def run_cli(*args: str, non_root: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [*KVTESTBED, *args]
    if non_root:
        argv = as_non_root(argv)
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


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inventory_is_one_line_and_changes_nothing(tmp_path, case):
    if os.geteuid() != 0:
        unavailable("the lab's preflight runs as root")
    hosts_yaml, expected = BAD[case]
    proc = run_cli("lab", "up", "--inventory", str(write_inventory(tmp_path, hosts_yaml)))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvtestbed lab up: invalid lab inventory: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not bridge_exists()
    assert not Path("/var/lib/kvtestbed/lab/badinput").exists()


def test_not_root_is_one_line(tmp_path):
    probe = subprocess.run(as_non_root([sys.executable, "-c", "import os, kvtestbed.cli; print(os.geteuid())"]),
                           capture_output=True, text=True, cwd="/", timeout=60)
    if "unshare failed" in probe.stderr:  # user namespaces disabled (sysctl user.max_user_namespaces=0)
        unavailable(f"no user namespace for a non-root run: {probe.stderr.strip()}")
    assert (probe.returncode, probe.stdout.strip()) == (0, str(NON_ROOT)), probe.stderr  # not root, and imports
    inventory = write_inventory(tmp_path, "all:\n  hosts:\n    pi-1: {ansible_host: 198.18.41.11, lab_profile: pi4b}\n")
    proc = run_cli("lab", "up", "--inventory", str(inventory), non_root=True)
    assert proc.returncode == 2, proc.stderr
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
