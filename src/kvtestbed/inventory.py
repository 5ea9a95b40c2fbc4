"""Hosts, groups and variables of an Ansible inventory, as `ansible-inventory --list` resolves them.

ansible-inventory merges group_vars into each host's vars but does not render templates, so a value such as
`/var/lib/kvtestbed/lab/{{ lab_name }}/ssh/id_ed25519` arrives raw. Plain references to the host's other vars
are rendered here with Jinja2 (which Ansible ships); anything needing Ansible itself (lookups, hostvars,
filters of collections) is left as written rather than guessed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from kvtestbed.project import ansible_bin

# vars referring to vars referring to vars: a few passes settle every real inventory; a cycle stops here
_RENDER_PASSES = 5
_LIST_TIMEOUT_S = 60


class InventoryError(Exception):
    """One line naming the inventory and what is wrong with it."""


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    user: str | None = None
    port: int = 22
    key_file: str | None = None
    ssh_args: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def in_lab(self) -> bool:
        """An emulated host of the lab (a systemd-nspawn container sharing the controller's kernel)."""
        return bool(self.vars.get("common_in_lab")) or "lab_profile" in self.vars


def _environment() -> jinja2.Environment:
    # sandboxed and strict: a template we cannot render fully stays raw instead of becoming "" or running code
    return jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)


def _render_value(env: jinja2.Environment, value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            return env.from_string(value).render(context)
        except jinja2.TemplateError:
            return value
    if isinstance(value, list):
        return [_render_value(env, item, context) for item in value]
    if isinstance(value, dict):
        return {key: _render_value(env, item, context) for key, item in value.items()}
    return value


def render_vars(host_vars: dict[str, Any]) -> dict[str, Any]:
    """The host's vars with `{{ var }}` references to its other vars rendered (repeatedly, for chains)."""
    env = _environment()
    current = dict(host_vars)
    for _ in range(_RENDER_PASSES):
        rendered = {key: _render_value(env, value, current) for key, value in current.items()}
        if rendered == current:
            break
        current = rendered
    return current


def host_from_vars(name: str, host_vars: dict[str, Any], groups: list[str]) -> Host:
    rendered = render_vars(host_vars)
    ssh_args: list[str] = []
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if rendered.get(key):
            ssh_args += shlex.split(str(rendered[key]))
    port = rendered.get("ansible_port") or rendered.get("ansible_ssh_port") or 22
    return Host(
        name=name,
        address=str(rendered.get("ansible_host") or name),
        user=rendered.get("ansible_user") or rendered.get("ansible_ssh_user"),
        port=int(port),
        key_file=rendered.get("ansible_ssh_private_key_file") or rendered.get("ansible_private_key_file"),
        ssh_args=ssh_args,
        groups=groups,
        vars=rendered,
    )


def _groups_of(listing: dict[str, Any]) -> dict[str, list[str]]:
    """Group -> every host in it, children's hosts included (ansible-inventory lists only direct ones)."""
    def hosts_below(group: str, seen: set[str]) -> list[str]:
        if group in seen:
            return []
        seen.add(group)
        entry = listing.get(group, {})
        found = list(entry.get("hosts", []))
        for child in entry.get("children", []):
            found += [host for host in hosts_below(child, seen) if host not in found]
        return found

    names = [key for key in listing if key != "_meta"]
    return {group: hosts_below(group, set()) for group in names}


class Inventory:
    def __init__(self, source: str, hosts: dict[str, Host], groups: dict[str, list[str]]) -> None:
        self.source = source
        self.hosts = hosts
        self.groups = groups

    @classmethod
    def from_listing(cls, source: str, listing: dict[str, Any]) -> Inventory:
        """From the JSON of `ansible-inventory --list` (what load() reads)."""
        hostvars = listing.get("_meta", {}).get("hostvars", {})
        groups = _groups_of(listing)
        membership: dict[str, list[str]] = {}
        for group, members in groups.items():
            if group in ("all", "ungrouped"):
                continue
            for member in members:
                membership.setdefault(member, []).append(group)
        names = list(dict.fromkeys([*groups.get("all", []), *hostvars]))
        hosts = {name: host_from_vars(name, hostvars.get(name, {}), sorted(membership.get(name, [])))
                 for name in names}
        return cls(source, hosts, groups)

    @classmethod
    def load(cls, path: str | Path) -> Inventory:
        source = str(path)
        if not Path(source).exists():
            raise InventoryError(f"inventory {source} does not exist")
        try:
            proc = subprocess.run([ansible_bin("ansible-inventory"), "-i", source, "--list"], capture_output=True,
                                  text=True, timeout=_LIST_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InventoryError(f"inventory {source}: cannot run ansible-inventory ({exc})") from None
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            raise InventoryError(f"inventory {source} does not parse: {lines[-1] if lines else 'unknown error'}")
        try:
            listing = json.loads(proc.stdout)
        except ValueError:
            raise InventoryError(f"inventory {source}: ansible-inventory did not print JSON") from None
        return cls.from_listing(source, listing)

    def group(self, name: str) -> list[Host]:
        if name not in self.groups:
            raise InventoryError(f"inventory {self.source}: group '{name}' not found")
        return [self.hosts[member] for member in self.groups[name]]

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            raise InventoryError(f"host '{name}' is not in inventory {self.source}")
        return self.hosts[name]

    def by_address(self, address: str) -> Host | None:
        return next((host for host in self.hosts.values() if host.address == address), None)

    def all_hosts(self) -> list[Host]:
        return list(self.hosts.values())
