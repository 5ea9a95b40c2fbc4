"""roles/kvstore sets notify-keyspace-events from what the agents deployed against each deployment need (the
agents' ACL user may not CONFIG SET them): worked out by the role's own vars over the shipped lab inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

# playbooks/kvstore_agent_needs.yml (on the agent hosts), then the role's resolve step and its derived value on a
# host of the deployment; set_fact and debug never connect
PLAY = """
- ansible.builtin.import_playbook: {needs}
- hosts: "{{{{ group }}}}[0]"
  gather_facts: false
  vars:
    kvstore_group: "{{{{ group }}}}"
    kvstore_settings: "{{{{ lookup('ansible.builtin.vars', group ~ '_kvstore', default={{}}) }}}}"
  tasks:
    - ansible.builtin.include_role: {{name: kvstore, tasks_from: resolve.yml, public: true}}
    - ansible.builtin.set_fact: {{_kvstore_all_instances: "{{{{ _kvstore_all_instances_effective }}}}"}}
    - ansible.builtin.debug: {{msg: "{{{{ [_kvstore_agents_notify_flags, _kvstore_agents_needs_unknown] }}}}"}}
"""


def _derived(tmp_path: Path, group: str, *extra: str) -> tuple[str, str]:
    """(the flags derived for `group`'s deployment, the agent hosts whose needs were unknown)."""
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(needs=ROOT / "playbooks" / "kvstore_agent_needs.yml"))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}  # fmt: skip
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(ROOT / "inventory/lab"), str(play), "-e", f"group={group}",
            "-e", f"testbed_secrets_dir={tmp_path / 'secrets'}", *extra]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    tasks = json.loads(proc.stdout)["plays"][-1]["tasks"]
    (result,) = tasks[-1]["hosts"].values()
    flags, unknown = result["msg"]
    return str(flags), ",".join(unknown)


@pytest.mark.parametrize(
    ("group", "flags"),
    [
        # observer-1's listeners on pi-2/pi-3 (K$), the expiry consumers on the Sentinel name `redis` (Ex)
        ("redis", "K$Ex"),
        # observer-valkey's listeners on pc-2 (K$); no expiry consumer points at Valkey
        ("valkey", "K$"),
        # hotkeys only: it subscribes to nothing
        ("redis_cluster", ""),
    ],
)
def test_lab_deployments_get_the_flags_their_agents_need(tmp_path: Path, group: str, flags: str) -> None:
    assert _derived(tmp_path, group) == (flags, "")


def test_with_no_agents_group_nothing_is_derived(tmp_path: Path) -> None:
    """The flags are then those the deployment's settings give (as in the role's Molecule scenarios)."""
    assert _derived(tmp_path, "redis", "-e", "agents_group=no_such_group") == ("", "")


def test_agent_hosts_outside_the_limit_are_known_to_be_unknown(tmp_path: Path) -> None:
    """`--limit pi-1`: pc-1's observer and expiry consumer were not looked at, so the role keeps the flags the
    instances run with (tasks/configure.yml) instead of writing only what pi-1's own agents need (none)."""
    flags, unknown = _derived(tmp_path, "redis", "--limit", "pi-1")
    assert flags == ""
    assert unknown.split(",") == ["pc-1", "pc-2"]
