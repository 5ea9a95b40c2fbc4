"""ansible-playbook on the controller with the JSON callback: what the preflight tests of tests/ansible read."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support.binaries import unavailable

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"


def run_tagged(tmp_path: Path, playbook: Path, inventory: str, tags: str) -> tuple[int, dict[str, Any]]:
    """Run `playbook` with only `tags` against `inventory` (YAML text, written to tmp_path/hosts.yml); secrets go
    to tmp_path/secrets. Returns the exit code and the JSON callback's report."""
    binary = BIN / "ansible-playbook"
    if not binary.exists():
        unavailable("ansible-playbook is not installed in this environment (pip install -e '.[controller]')")
    (tmp_path / "hosts.yml").write_text(inventory)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    argv = [str(binary), "-i", str(tmp_path / "hosts.yml"), str(playbook), "--tags", tags,
            "-e", f"testbed_secrets_dir={tmp_path / 'secrets'}"]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"ansible-playbook printed no JSON report (rc {proc.returncode}): "
                             f"{proc.stderr[-2000:]}") from None  # fmt: skip
    return proc.returncode, report
