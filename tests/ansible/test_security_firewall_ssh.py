"""roles/common's firewall opens SSH on the port Ansible uses, to the testbed subnet, the admin sources and the
deploying controller only (no lab needed).

One ansible-playbook run on the controller (connection local): the role's own ssh_access.yml finds the controller's
address from SSH_CLIENT (set here as sshd would), then the role's firewall template is rendered into a temporary
file with the role's defaults and vars (include_role public) and checked by `nft -c` where nft is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ROLE = ROOT / "roles" / "common"

PLAY = """---
- name: Render the common role's firewall for a host with another SSH port
  hosts: fw
  gather_facts: false
  tasks:
    - name: The role's way of finding the controller's address (and its defaults and vars, made public)
      ansible.builtin.include_role: {name: common, tasks_from: ssh_access.yml, public: true}
    - name: Render the firewall
      ansible.builtin.template:
        src: "ROLE/templates/firewall.nft.j2"
        dest: "OUT"
        mode: "0600"
"""

INVENTORY = """---
all:
  hosts:
    fw:
      ansible_connection: local
      ansible_python_interpreter: "{{ ansible_playbook_python }}"
      ansible_port: 2222
      testbed_subnet: 10.9.0.0/24
      common_firewall_ssh_sources: [203.0.113.0/24, "2001:db8::/32"]
"""


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory) -> str:
    if not PLAYBOOK.exists():
        unavailable("ansible is not installed in this environment (pip install -e '.[controller]')")
    tmp = tmp_path_factory.mktemp("fw")
    out = tmp / "firewall.nft"
    (tmp / "play.yml").write_text(PLAY.replace("ROLE", str(ROLE)).replace("OUT", str(out)))
    (tmp / "hosts.yml").write_text(INVENTORY)
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp / "tmp"), "SSH_CLIENT": "192.0.2.7 50022 2222"}
    proc = subprocess.run([str(PLAYBOOK), "-i", str(tmp / "hosts.yml"), str(tmp / "play.yml")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out.read_text()


def _ssh_rules(ruleset: str) -> list[str]:
    return [line.strip() for line in ruleset.splitlines()
            if re.search(r"\btcp dport (\d+)\b", line) and "@testbed" not in line]


def test_ssh_on_ansible_port_to_the_allowed_sources_only(ruleset):
    rules = _ssh_rules(ruleset)
    assert sorted(rules) == sorted([
        "ip saddr 10.9.0.0/24 tcp dport 2222 accept",      # the testbed subnet
        "ip saddr 203.0.113.0/24 tcp dport 2222 accept",   # common_firewall_ssh_sources
        "ip6 saddr 2001:db8::/32 tcp dport 2222 accept",
        "ip saddr 192.0.2.7 tcp dport 2222 accept",        # the controller, outside the testbed subnet
    ]), rules


def test_rendered_ruleset_is_valid(ruleset, tmp_path):
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not Path(nft).exists() or os.geteuid() != 0:
        unavailable("nft -c needs nftables and root")
    # the drop-in include points at the host's directory: check the ruleset without it
    path = tmp_path / "firewall.nft"
    path.write_text(ruleset.replace('include "/etc/kvtestbed/firewall.d/*.nft"', ""))
    proc = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
