"""roles/agents names the wheel it copies from the package's one version (kvagent/__init__.py), not a copy of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kvagent

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

PLAY = """
- hosts: localhost
  gather_facts: false
  vars_files: [{vars}]
  vars:
    agents_project_dir: {project}
    agents_instances: []
  tasks:
    - ansible.builtin.debug: {{msg: "{{{{ _agents_wheel }}}}"}}
"""


def test_wheel_name_follows_the_package_version(tmp_path: Path) -> None:
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(vars=ROOT / "roles/agents/vars/main.yml", project=ROOT / "agents"))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "json"}
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(play)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["msg"] == f"kvtestbed_agent-{kvagent.__version__}-py3-none-any.whl"
