"""The strategy `kvtestbed deploy` hands ansible-playbook (kvtestbed/deploy/strategy.py): the default really runs
through Mitogen (no interpreter is started per task), `linear` is Ansible's own, and both leave the same
result. A bad --strategy is one line and exit 2 before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvtestbed.deploy.strategy import DEFAULT, StrategyError, mitogen_strategy_dir, strategy_env

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
KVTESTBED = Path(sys.executable).parent / "kvtestbed"

PLAY = """---
- name: Two tasks on this machine
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Write a file
      ansible.builtin.copy:
        dest: "{{ target }}"
        content: "written\\n"
        mode: "0600"
    - name: Read it back
      ansible.builtin.command: cat {{ target }}
      register: read_back
      changed_when: false
    - name: Say what it read
      ansible.builtin.assert:
        that: read_back.stdout == "written"
"""


def _run(tmp_path: Path, strategy: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    target = tmp_path / f"out-{strategy}"
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
               **strategy_env(strategy))
    proc = subprocess.run([str(PLAYBOOK), "-vvv", "-i", "localhost,", str(playbook), "-e", f"target={target}",
                           # as Ansible's implicit localhost does (a pyenv shim on PATH would end Mitogen's bootstrap)
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return proc, target


def test_the_default_strategy_is_mitogens_and_it_runs_no_ansiballz_payload(tmp_path: Path) -> None:
    assert DEFAULT == "mitogen_linear"
    assert mitogen_strategy_dir() is not None, "mitogen is a dependency of kvtestbed (pyproject.toml)"
    mitogen, mitogen_file = _run(tmp_path, "mitogen_linear")
    linear, linear_file = _run(tmp_path, "linear")
    assert mitogen.returncode == 0, mitogen.stdout[-2000:] + mitogen.stderr[-2000:]
    assert linear.returncode == 0, linear.stdout[-2000:] + linear.stderr[-2000:]
    assert mitogen_file.read_text() == linear_file.read_text() == "written\n"
    assert oct(mitogen_file.stat().st_mode & 0o777) == oct(linear_file.stat().st_mode & 0o777) == "0o600"
    # Ansible's linear strategy starts a fresh interpreter per module run (`<localhost> EXEC /bin/sh -c '...python3'`
    # under -vvv); Mitogen runs the module in its persistent interpreter and execs nothing
    assert linear.stdout.count("<localhost> EXEC ") >= 3
    assert "<localhost> EXEC " not in mitogen.stdout


def test_a_strategy_that_does_not_exist_is_refused() -> None:
    with pytest.raises(StrategyError, match="not one of mitogen_linear, linear"):
        strategy_env("free")


def test_the_cli_refuses_a_bad_strategy_in_one_line_before_anything_runs(tmp_path: Path) -> None:
    proc = subprocess.run([str(KVTESTBED), "deploy", "--strategy", "fast", "--inventory", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "strategy 'fast'" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_local_connection_hosts_get_ansibles_strategy_unless_mitogen_is_asked_for() -> None:
    from kvtestbed.deploy.strategy import choose

    assert choose(None, ["", "ssh", ""]) == ("mitogen_linear", None)
    chosen, why = choose(None, ["", "local"])
    assert chosen == "linear" and why and "ansible_connection: local" in why and "\n" not in why
    assert choose("mitogen_linear", ["local"]) == ("mitogen_linear", None)
    assert choose("linear", []) == ("linear", None)
