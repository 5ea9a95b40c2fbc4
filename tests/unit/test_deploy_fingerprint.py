"""The deploy fingerprint: which inputs change it, and how the hosts' answers are read (no hosts needed)."""

from __future__ import annotations

from pathlib import Path

from kvtestbed.deploy import fingerprint

ROOT = Path(__file__).resolve().parents[2]


def _tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "project"
    for entry in ("roles/kvstore/tasks", "playbooks", "agents/kvagent", "inventory/lab"):
        (root / entry).mkdir(parents=True)
    (root / "roles/kvstore/tasks/main.yml").write_text("---\n")
    (root / "playbooks/site.yml").write_text("---\n")
    (root / "agents/kvagent/x.py").write_text("x = 1\n")
    (root / "inventory/lab/hosts.yml").write_text("all: {}\n")
    secrets = root / "secrets"
    secrets.mkdir()
    (secrets / "redis-admin").write_text("s3cret\n")
    return root, root / "inventory/lab", secrets


def test_every_input_changes_the_fingerprint_and_caches_do_not(tmp_path: Path) -> None:
    root, inventory, secrets = _tree(tmp_path)
    base = fingerprint.compute(root, inventory, secrets, {"playbook": "site.yml"})
    assert base == fingerprint.compute(root, inventory, secrets, {"playbook": "site.yml"})
    # bytecode and build output are not inputs
    (root / "agents/kvagent/__pycache__").mkdir()
    (root / "agents/kvagent/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    (root / "agents/build").mkdir()
    (root / "agents/build/lib.py").write_text("")
    assert fingerprint.compute(root, inventory, secrets, {"playbook": "site.yml"}) == base
    changes = [
        lambda: (root / "roles/kvstore/tasks/main.yml").write_text("--- # changed\n"),
        lambda: (root / "agents/kvagent/x.py").write_text("x = 2\n"),
        lambda: (inventory / "hosts.yml").write_text("all: {hosts: {a: }}\n"),
        lambda: (secrets / "redis-admin").write_text("rotated\n"),
        lambda: (root / "playbooks/new.yml").write_text("---\n"),
    ]
    seen = {base}
    for change in changes:
        change()
        digest = fingerprint.compute(root, inventory, secrets, {"playbook": "site.yml"})
        assert digest not in seen
        seen.add(digest)
    assert fingerprint.compute(root, inventory, secrets, {"playbook": "other.yml"}) not in seen


def _fake_ansible(tmp_path: Path, output: str, rc: int = 0) -> Path:
    script = tmp_path / "bin" / "ansible"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {rc}\n")
    script.chmod(0o755)
    return script


def test_hosts_answers_decide_whether_to_converge(tmp_path: Path, monkeypatch) -> None:
    # ansible's one-line output (-o) as 2.x prints it for the shell module; the ansible binary is a stand-in
    # because the question is how its lines are read, not how SSH works
    fp = "ab" * 32
    cases = {
        f"pi-1 | CHANGED | rc=0 | (stdout) {fp}\\n0\npi-2 | CHANGED | rc=0 | (stdout) {fp}\\n0": (True, "2 hosts"),
        f"pi-1 | CHANGED | rc=0 | (stdout) {fp}\\n0\npi-2 | CHANGED | rc=0 | (stdout) none\\n0": (False, "pi-2 has no"),
        f"pi-1 | CHANGED | rc=0 | (stdout) {fp}\\n2": (False, "pi-1 has 2 failed"),
        f"pi-1 | CHANGED | rc=0 | (stdout) {'cd' * 32}\\n0": (False, "other inputs"),
    }
    for output, (unchanged, reason) in cases.items():
        monkeypatch.setattr(fingerprint, "ansible_bin", lambda _name, o=output: str(_fake_ansible(tmp_path, o)))
        state = fingerprint.hosts_state(tmp_path, tmp_path, fp, {"PATH": "/usr/bin:/bin"})
        assert state.unchanged is unchanged and reason in state.reason, (output, state)
    unreachable = f"pi-1 | CHANGED | rc=0 | (stdout) {fp}\\n0\npi-2 | UNREACHABLE!: ssh: connect to host"
    monkeypatch.setattr(fingerprint, "ansible_bin", lambda _name: str(_fake_ansible(tmp_path, unreachable, 4)))
    state = fingerprint.hosts_state(tmp_path, tmp_path, fp, {"PATH": "/usr/bin:/bin"})
    assert not state.unchanged and "pi-2" in state.reason


def test_site_yml_records_the_fingerprint_last() -> None:
    # the record is a playbook of its own (kvtestbed deploy runs it alone after a deploy that generated secrets)
    site = (ROOT / "playbooks/site.yml").read_text()
    assert site.rstrip().endswith("ansible.builtin.import_playbook: fingerprint.yml")
    record = (ROOT / "playbooks/fingerprint.yml").read_text()
    assert record.rstrip().endswith("when: kvtestbed_deploy_fingerprint is defined")
    assert fingerprint.HOST_FILE in record
