"""The passwords the roles generate on the controller stay private: the secrets dir 0700, every file 0600.

Ansible's password lookup writes new files 0600 and a new dir 0700, but leaves alone a secrets dir made by someone
else (`mkdir secrets`, an earlier tool) and a password file put there by hand. Each role's secrets tasks run here on
the controller (connection local) against such a dir; a hand-made password is kept, not regenerated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

PLAY = """---
- name: Generate the roles' passwords into SECRETS
  hosts: node-1
  gather_facts: false
  vars:
    testbed_secrets_dir: SECRETS
  tasks:
    - name: kvstore
      ansible.builtin.include_role: {name: kvstore, tasks_from: secrets.yml}
      vars: {kvstore_group: demo}
    - name: sentinel
      ansible.builtin.include_role: {name: sentinel, tasks_from: secrets.yml}
      vars: {sentinel_group: demo_sentinels, sentinel_monitors: []}
    - name: nats
      ansible.builtin.include_role: {name: nats, tasks_from: secrets.yml}
"""

EXPECTED = {"demo-admin", "demo-agent", "demo-exporter", "demo-replica", "demo-sentinel", "demo_sentinels-admin",
            "nats_app", "nats_agent", "nats_sys", "nats_route"}


def test_generated_secrets_are_private(tmp_path):
    if not PLAYBOOK.exists():
        unavailable("ansible is not installed in this environment (pip install -e '.[controller]')")
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o755)
    secrets.chmod(0o755)
    by_hand = secrets / "demo-admin"
    by_hand.write_text("made-by-hand-0123456789abcdefghij\n")
    by_hand.chmod(0o644)
    (tmp_path / "play.yml").write_text(PLAY.replace("SECRETS", str(secrets)))
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    node-1:\n      ansible_connection: local\n      ansible_host: 127.0.0.1\n"
        '      ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
        "  children:\n    demo: {hosts: {node-1: }}\n    demo_sentinels: {hosts: {node-1: }}\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
    proc = subprocess.run([str(PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert {p.name for p in secrets.iterdir()} == EXPECTED
    assert secrets.stat().st_mode & 0o777 == 0o700, f"secrets dir {secrets.stat().st_mode & 0o777:o}"
    for path in secrets.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, f"{path.name}: {path.stat().st_mode & 0o777:o}"
    assert by_hand.read_text() == "made-by-hand-0123456789abcdefghij\n"
    # no password in the run's output
    for path in secrets.iterdir():
        assert path.read_text().strip() not in proc.stdout + proc.stderr, path.name
