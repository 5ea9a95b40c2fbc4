"""Run ansible-playbook for the CLI: compact progress on stdout, the first failure as one line."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kvtestbed.project import ansible_bin


@dataclass(frozen=True)
class PlaybookOutcome:
    returncode: int
    error: str | None
    input_error: bool


def run_playbook(root: Path, playbook: str, inventory: Path, extra_vars: dict[str, object] | None = None,
                 limit: str | None = None, tags: str | None = None, verbose: bool = False,
                 strategy_env: dict[str, str] | None = None) -> PlaybookOutcome:
    with tempfile.NamedTemporaryFile(prefix="kvtestbed-error-", suffix=".json", delete=False) as handle:
        error_file = Path(handle.name)
    env = dict(os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"), KVTESTBED_ERROR_FILE=str(error_file),
               ANSIBLE_FORCE_COLOR="0", **(strategy_env or {}))
    if not verbose:
        env["ANSIBLE_STDOUT_CALLBACK"] = "kvtestbed"
    argv = [ansible_bin("ansible-playbook"), "-i", str(inventory), str(root / "playbooks" / playbook)]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if limit:
        argv += ["--limit", limit]
    if tags:
        argv += ["--tags", tags]
    try:
        proc = subprocess.run(argv, cwd=root, env=env)
        error, input_error = None, False
        if error_file.stat().st_size:
            recorded = json.loads(error_file.read_text())
            error, input_error = recorded["msg"], bool(recorded.get("input_error"))
        elif proc.returncode != 0:
            error = f"ansible-playbook {playbook} failed (exit {proc.returncode}); rerun with --verbose"
        return PlaybookOutcome(proc.returncode, error, input_error)
    except FileNotFoundError:
        return PlaybookOutcome(2, "ansible-playbook not found: install kvtestbed into a venv (make install)", True)
    finally:
        error_file.unlink(missing_ok=True)
