"""Skip a deploy whose inputs did not change: one hash of everything a converge of playbooks/site.yml reads on the
controller, recorded on every host by the playbook's last play, compared before the next deploy.

Why: an unchanged deploy of the 5-host lab ran ~400 tasks (about 6.5 min on this 2-core machine with other work
running, 2026-12-02; `ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks`: no task above 15 s, the time is the
per-task round trip times the task count), all of them `ok`. Nothing a converge does can differ when its inputs are
the same and the hosts are as the last deploy left them, so `kvtestbed deploy` asks each host one question over SSH
(its recorded fingerprint and its failed units) and runs nothing when every host answers with this fingerprint and
no failed unit. What it cannot see: a change made by hand on a host that leaves no failed unit (`--force`
converges anyway); any input file, secret, the inventory or the playbook's options changing runs the whole deploy.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kvtestbed.project import ansible_bin

# what site.yml reads on the controller: its plays and roles, the code the roles build and copy (agents' wheel,
# Locust's wheel, dashboards, the lab's image helpers), Ansible's own settings
INPUTS = ("ansible.cfg", "playbooks", "roles", "plugins", "agents", "loadtests", "dashboards", "src/kvtestbed/lab")
SKIP_PARTS = {"__pycache__", ".pytest_cache", "build", "dist", ".molecule"}
SKIP_SUFFIXES = (".pyc", ".egg-info", ".log")
HOST_FILE = "/var/lib/kvtestbed/deploy-fingerprint"
_ANSWER = re.compile(r"^(?P<host>\S+) \| (?P<state>[A-Z]+)(?: \| rc=(?P<rc>-?\d+))? \| \(stdout\) (?P<out>.*)$")


def _files(root: Path, entry: str) -> list[Path]:
    path = root / entry
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(
        p for p in path.rglob("*")
        if p.is_file() and not SKIP_PARTS.intersection(p.relative_to(root).parts)
        and not any(part.endswith(SKIP_SUFFIXES) for part in p.relative_to(root).parts)
    )


def compute(root: Path, inventory: Path, secrets_dir: Path, options: dict[str, object]) -> str:
    """sha256 over the inputs' paths and contents, the inventory's files, the secrets' contents and the options."""
    digest = hashlib.sha256()
    digest.update(json.dumps(options, sort_keys=True).encode())
    sources = [(root, entry) for entry in INPUTS]
    sources.append((inventory.parent if inventory.is_file() else inventory, "."))
    sources.append((secrets_dir, "."))
    for base, entry in sources:
        for path in _files(base, entry):
            digest.update(str(path.relative_to(base)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class HostsState:
    unchanged: bool
    reason: str  # why a converge is needed, or what was found


def hosts_state(
    root: Path, inventory: Path, fingerprint: str, env: dict[str, str], timeout_s: float = 60
) -> HostsState:
    """Every inventory host's recorded fingerprint and failed units, in one ad-hoc Ansible command."""
    argv = [ansible_bin("ansible"), "all", "-i", str(inventory), "-o", "-m", "ansible.builtin.shell", "-a",
            f"cat {HOST_FILE} 2>/dev/null || echo none; systemctl --failed --no-legend --plain | wc -l"]
    try:
        proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return HostsState(False, f"the hosts were not asked ({exc.__class__.__name__})")
    answers: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        match = _ANSWER.match(line.strip())
        if match and match["state"] in ("CHANGED", "SUCCESS") and (match["rc"] in (None, "0")):
            answers[match["host"]] = match["out"]
    listed = _inventory_hosts(proc.stdout, proc.stderr)
    if proc.returncode != 0 or not answers:
        failed = ", ".join(sorted(listed - set(answers))) or "some host"
        return HostsState(False, f"{failed} did not answer")
    for host, out in sorted(answers.items()):
        recorded, _, failed_units = out.replace("\\n", "\n").partition("\n")
        if recorded.strip() != fingerprint:
            return HostsState(False, f"{host} was last deployed from other inputs" if recorded.strip() != "none"
                              else f"{host} has no record of a deploy")
        if failed_units.strip() not in ("", "0"):
            return HostsState(False, f"{host} has {failed_units.strip()} failed unit(s)")
    return HostsState(True, f"{len(answers)} hosts at {fingerprint[:12]}, no failed unit")


def _inventory_hosts(stdout: str, stderr: str) -> set[str]:
    hosts = set()
    for line in (stdout + "\n" + stderr).splitlines():
        head = line.split(" | ", 1)[0].strip()
        if head and " " not in head and " | " in line:
            hosts.add(head)
    return hosts
