"""Helpers of the lab tests: the CLI, lab inventories of their own, ansible-playbook, ssh into lab hosts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"


def kvtestbed(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KVTESTBED_HOME=str(ROOT))
    return subprocess.run([sys.executable, "-m", "kvtestbed.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def lab_vars(name: str, subnet: str, indent: int = 4) -> str:
    """The inventory vars of a lab of its own on <subnet>.0/24 (subnet like "198.18.46"), as YAML lines."""
    lines = [f"lab_name: {name}", f"lab_bridge: kvtb-{name}", f"lab_subnet: {subnet}.0/24",
             f"lab_gateway: {subnet}.1", "ansible_user: root",
             f"ansible_ssh_private_key_file: /var/lib/kvtestbed/lab/{name}/ssh/id_ed25519",
             # throwaway hosts with new host keys at every rebuild: no checking for the lab only
             "ansible_host_key_checking: false",
             "ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
             f"testbed_subnet: {subnet}.0/24", f"common_ntp_servers: [{subnet}.1]", "common_in_lab: true"]
    return "\n".join(" " * indent + line for line in lines)


def write_lab_inventory(path: Path, name: str, octet: int, hosts: dict[str, str], extra: str = "") -> Path:
    """An inventory for a lab of its own on 198.18.<octet>.0/24: hosts maps name -> profile."""
    path.mkdir(parents=True, exist_ok=True)
    lines = ["all:", "  hosts:"]
    for index, (host, profile) in enumerate(hosts.items(), start=11):
        lines.append(f"    {host}: {{ansible_host: 198.18.{octet}.{index}, lab_profile: {profile}}}")
    lines += ["  vars:", lab_vars(name, f"198.18.{octet}")]
    (path / "hosts.yml").write_text("\n".join(lines) + "\n" + extra)
    return path


def ansible_env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": f"{BIN}:{os.environ['PATH']}",
            "ANSIBLE_NOCOLOR": "1"}


def run_playbook(inventory: Path, playbook: str, *extra: str, check: bool = True,
                 timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """ansible-playbook from the project; with check, a failure fails the test with the output's tail."""
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(ROOT / playbook), *extra],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{playbook} failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-2000:]}")
    return proc


def changed_total(stdout: str) -> int:
    """Sum of changed=N over a PLAY RECAP (the default callback's format)."""
    return sum(int(n) for n in re.findall(r"\bchanged=(\d+)", stdout))


def ssh(address: str, key: str | Path, command: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    return subprocess.run(["ssh", "-i", str(key), *options, f"root@{address}", command],
                          capture_output=True, text=True, timeout=timeout)
