"""SSH host-key checking stays on by default (real hardware) and is turned off for the lab's throwaway hosts only.

ansible.cfg applies to every inventory, so it must not disable checking; the lab's inventories (inventory/lab, the
Molecule scenarios' labs, the labs tests/support/lab.py writes) turn it off for their own hosts, whose keys change
at every rebuild.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
NO_CHECK = ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null")


def _inventory(name: str, tmp_path: Path) -> dict[str, dict]:
    if not ANSIBLE_INVENTORY.exists():
        unavailable("ansible is not installed in this environment (pip install -e '.[controller]')")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path)}
    proc = subprocess.run([str(ANSIBLE_INVENTORY), "-i", f"inventory/{name}", "--list"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
    assert hostvars, f"inventory/{name} lists no hosts"
    return hostvars


def _checks_host_keys(hostvars: dict) -> bool:
    """Whether Ansible's ssh connection (and testinfra, which reads the same ssh args) checks this host's key."""
    if str(hostvars.get("ansible_host_key_checking", True)).lower() in ("false", "no", "0"):
        return False
    args = " ".join(str(hostvars.get(k, "")) for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
    return not any(option in args for option in NO_CHECK)


def _lab_vars_disable_checking(variables: dict) -> bool:
    args = str(variables.get("ansible_ssh_common_args", ""))
    return variables.get("ansible_host_key_checking") is False and all(option in args for option in NO_CHECK)


def test_ansible_cfg_keeps_host_key_checking_on():
    config = configparser.ConfigParser()
    config.read(ROOT / "ansible.cfg")
    assert config.getboolean("defaults", "host_key_checking", fallback=True), \
        "ansible.cfg disables host key checking for every inventory"
    ssh_args = config.get("ssh_connection", "ssh_args", fallback="")
    for option in NO_CHECK:
        assert option not in ssh_args, f"ansible.cfg's ssh_args carry {option} for every inventory"


def test_example_hardware_checks_host_keys(tmp_path):
    for host, hostvars in _inventory("example-hardware", tmp_path).items():
        assert _checks_host_keys(hostvars), f"example-hardware host {host} does not check SSH host keys"


def test_lab_inventory_skips_host_keys(tmp_path):
    for host, hostvars in _inventory("lab", tmp_path).items():
        assert not _checks_host_keys(hostvars), f"lab host {host} would check its (rebuilt) host key"
        assert _lab_vars_disable_checking(hostvars), host


@pytest.mark.parametrize("inventory", sorted(ROOT.glob("roles/*/molecule/*/inventory.yml")),
                         ids=lambda p: "/".join(p.parts[-4:-1]))
def test_molecule_labs_skip_host_keys(inventory: Path):
    document = yaml.safe_load(inventory.read_text())["all"]
    hosts = document.get("hosts") or {}
    if hosts and all((h or {}).get("ansible_connection") == "local" for h in hosts.values()):
        return  # a scenario on the controller itself (roles/grafana's): no SSH, no host key to check
    variables = document["vars"]
    assert _lab_vars_disable_checking(variables), f"{inventory}: the lab's hosts need host key checking off"


def test_lab_vars_helper_skips_host_keys():
    from tests.support.lab import lab_vars

    variables = yaml.safe_load(lab_vars("x", "198.18.99", indent=0))
    assert _lab_vars_disable_checking(variables)
