"""roles/tls_ca never prints a private key, even under `ansible-playbook --diff`, and a host's key never takes the
CA's place, whatever the host is called (no lab needed).

The role runs on the controller (connection local) with every path in a temporary directory: CA and host keys are
made, the key installed; the run's whole output must not contain a PEM private key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

PLAY = """---
- name: Apply tls_ca to the controller
  hosts: all
  gather_facts: false
  roles:
    - tls_ca
"""


# "ca": a host named like the CA's own files once overwrote ca.key with its host key
@pytest.mark.parametrize("host", ["node-1", "ca"])
def test_diff_never_shows_a_private_key(tmp_path, host):
    if not PLAYBOOK.exists():
        unavailable("ansible is not installed in this environment (pip install -e '.[controller]')")
    if os.geteuid() != 0:
        unavailable("the role installs files owned by root")
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "hosts.yml").write_text(
        f"all:\n  hosts:\n    {host}:\n      ansible_connection: local\n      ansible_host: 127.0.0.1\n"
        '      ansible_python_interpreter: "{{ ansible_playbook_python }}"\n')
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
    host_dir = tmp_path / "host"
    proc = subprocess.run([str(PLAYBOOK), "--diff", "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"),
                           "-e", f"tls_ca_dir={tmp_path / 'secrets' / 'tls'}", "-e", f"tls_ca_host_dir={host_dir}",
                           "-e", "tls_ca_group=root"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    # the keys were made and installed in this very run, so a diff had something to show
    key = (host_dir / "host.key").read_text()
    assert "PRIVATE KEY-----" in key and (host_dir / "host.key").stat().st_mode & 0o777 == 0o640
    assert "PRIVATE KEY" not in output, "a private key was printed"
    assert key.splitlines()[1] not in output
    # certificates may show in a diff: the run did print diffs, it just kept the keys out
    assert "CERTIFICATE-----" in output
    # the installed host certificate is signed by the CA it installed, and that CA is still a CA
    ca, cert = host_dir / "ca.crt", host_dir / "host.crt"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)], capture_output=True, text=True,
                            timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "kvtestbed testbed CA" in subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(ca)],
                                                    capture_output=True, text=True, timeout=30).stdout
