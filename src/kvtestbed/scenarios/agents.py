"""The agents a scenario uses: deployed idle (roles/agents, agents_state: stopped), started for the run, their
figures collected from /hdr at the end, stopped again whatever happens.

Where an agent listens is read from its deployed config on the host (/etc/kvtestbed/agents/<name>.yaml), the
truth of what runs there, rather than from the inventory's templates (which need Ansible's lookups to render).
Only `service.metrics_host` and `service.metrics_port` are taken from it: the file holds passwords and nothing
else of it is kept, logged or shown.
"""

from __future__ import annotations

import json
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import yaml

from kvtestbed.inventory import Host, Inventory
from kvtestbed.remote import Remote, RemoteError

CONFIG_DIR = "/etc/kvtestbed/agents"
# a scenario's config changes live for the run only: a config and a unit drop-in under /run (tmpfs, gone at a
# reboot), removed when the agent stops; the deployed config is never touched
RUN_CONFIG_DIR = "/run/kvtestbed/agents"
DROP_IN = "kvtestbed-scenario.conf"
DEFAULT_METRICS_PORT = 9400
HEALTH_TIMEOUT_S = 60.0
COLLECT_TIMEOUT_S = 10.0  # an agent's /hdr at the end of a run


class AgentError(Exception):
    """One line naming the agent and what to fix."""


@dataclass
class AgentHandle:
    name: str
    host: Host
    metrics_host: str
    metrics_port: int
    summary: dict[str, Any] = field(default_factory=dict)  # the /hdr summary collected at the end
    histograms: dict[str, Any] = field(default_factory=dict, repr=False)  # and its encoded HdrHistograms
    deployed: dict[str, Any] = field(default_factory=dict, repr=False)  # the deployed config (holds passwords)
    overridden: bool = False

    @property
    def unit(self) -> str:
        return f"kvtestbed-agent@{self.name}.service"

    @property
    def url(self) -> str:
        return f"http://{self.metrics_host}:{self.metrics_port}"


def locate(name: str, host_name: str | None, inventory: Inventory, remotes: dict[str, Remote]) -> AgentHandle:
    """The host that has agent `name` deployed (the named one, else the first of group `agents` that has it)."""
    candidates = [inventory.host(host_name)] if host_name else inventory.group("agents")
    for host in candidates:
        remote = remotes[host.name]
        path = f"{CONFIG_DIR}/{name}.yaml"
        done = remote.run(f"cat {shlex.quote(path)}", timeout=20)
        if done.rc != 0:
            continue
        try:
            service = (yaml.safe_load(done.stdout) or {}).get("service") or {}  # validated by parsing: kept below
        except yaml.YAMLError:
            raise AgentError(f"agent {name} on {host.name}: {path} does not parse (redeploy it)") from None
        return AgentHandle(
            name=name,
            host=host,
            metrics_host=str(service.get("metrics_host") or host.address),
            metrics_port=int(service.get("metrics_port") or DEFAULT_METRICS_PORT),
            deployed=yaml.safe_load(done.stdout) or {},
        )
    where = f"host {host_name}" if host_name else "any host of group agents"
    raise AgentError(f"agent {name}: not deployed on {where} (add it to agents_instances and run kvtestbed deploy)")


def _health(agent: AgentHandle) -> bool:
    try:
        with urllib.request.urlopen(f"{agent.url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def merged(base: Any, changes: Any) -> Any:
    """`changes` laid over `base`, mapping by mapping (a scenario names only what it changes). A list entry is named
    by its index (`--set agents.0.config.listeners.1.copies=4` gives {"listeners": {"1": {"copies": 4}}}): that
    entry is changed and the others kept, so a scenario never restates a listener's endpoint and password."""
    if isinstance(base, dict) and isinstance(changes, dict):
        out = dict(base)
        for key, value in changes.items():
            out[key] = merged(base.get(key), value)
        return out
    if isinstance(base, list) and isinstance(changes, dict) and changes and all(_index(k) is not None for k in changes):
        items = list(base)
        for key, value in changes.items():
            index = _index(key)
            if index is None or index >= len(items):
                raise AgentError(f"config: list entry {key} does not exist (the deployed list has {len(items)})")
            items[index] = merged(items[index], value)
        return items
    return changes


def _index(key: Any) -> int | None:
    text = str(key)
    return int(text) if text.isdigit() else None


def _drop_in_dir(agent: AgentHandle) -> str:
    return f"/run/systemd/system/{agent.unit}.d"


def apply_config(agent: AgentHandle, changes: dict[str, Any], remote: Remote) -> None:
    """The deployed config with the scenario's changes, for this run only: written to /run through stdin (its
    passwords never on a command line) and used by a runtime drop-in that points ExecStart at it."""
    try:
        config = merged(agent.deployed, changes)
    except AgentError as exc:
        raise AgentError(f"agent {agent.name} on {agent.host.name}: {exc}") from None
    if "service" in changes:
        service = config.get("service") or {}
        agent.metrics_host = str(service.get("metrics_host") or agent.host.address)
        agent.metrics_port = int(service.get("metrics_port") or DEFAULT_METRICS_PORT)
    path = f"{RUN_CONFIG_DIR}/{agent.name}.yaml"
    unit_text = remote.run(f"systemctl cat {shlex.quote(agent.unit)}", timeout=30).stdout
    exec_start = next((line for line in unit_text.splitlines() if line.startswith("ExecStart=") and "--config" in line),
                      None)  # fmt: skip
    if exec_start is None:
        raise AgentError(f"agent {agent.name} on {agent.host.name}: its unit has no ExecStart with --config "
                         "(redeploy roles/agents)")  # fmt: skip
    head, _, _ = exec_start.partition("--config")
    drop_in = f"[Service]\nExecStart=\n{head}--config {path}\n"
    # the unit's own user reads the run's config (it is private: the deployed one's passwords are in it)
    user = next((line.partition("=")[2].strip() for line in unit_text.splitlines() if line.startswith("User=")), "")
    owner = shlex.quote(user or "root")
    script = (
        f"install -d -m 0750 -o {owner} -g {owner} {RUN_CONFIG_DIR} && "
        f"install -m 0600 -o {owner} -g {owner} /dev/stdin {shlex.quote(path)} && "
        f"mkdir -p {shlex.quote(_drop_in_dir(agent))} && "
        f"printf '%b' {shlex.quote(drop_in)} > {shlex.quote(_drop_in_dir(agent) + '/' + DROP_IN)} && "
        "systemctl daemon-reload"
    )
    done = remote.run(script, timeout=60, input_text=yaml.safe_dump(config, sort_keys=True))
    if done.rc != 0:
        raise AgentError(f"agent {agent.name} on {agent.host.name}: cannot apply the scenario's config "
                         f"({_last(done.stderr)})")  # fmt: skip
    agent.overridden = True


def remove_config(agent: AgentHandle, remote: Remote) -> str | None:
    """Remove the run's config and drop-in (the deployed config takes over again); the error line, or None."""
    if not agent.overridden:
        return None
    script = (f"rm -rf {shlex.quote(_drop_in_dir(agent))} {shlex.quote(f'{RUN_CONFIG_DIR}/{agent.name}.yaml')} && "
              "systemctl daemon-reload")  # fmt: skip
    try:
        done = remote.run(script, timeout=60)
    except RemoteError as exc:
        return str(exc)
    agent.overridden = False
    return None if done.rc == 0 else f"agent {agent.name}: cannot remove the run's config ({_last(done.stderr)})"


def start(agent: AgentHandle, remote: Remote) -> None:
    """Start the unit and wait (bounded) until its health endpoint says it runs."""
    done = remote.run(f"systemctl start {shlex.quote(agent.unit)}", timeout=60)
    if done.rc != 0:
        raise AgentError(f"agent {agent.name} on {agent.host.name}: systemctl start failed ({_last(done.stderr)})")
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while not _health(agent):
        if time.monotonic() > deadline:
            raise AgentError(
                f"agent {agent.name} on {agent.host.name}: not healthy within {HEALTH_TIMEOUT_S:g} s "
                f"(journalctl -u {agent.unit} on the host says why)"
            )
        time.sleep(0.5)  # polling an HTTP endpoint at a bounded pace, not a synchronisation by time


def collect(agent: AgentHandle) -> dict[str, Any] | None:
    """The agent's /hdr payload (summary + encoded histograms), or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{agent.url}/hdr", timeout=COLLECT_TIMEOUT_S) as response:
            payload: dict[str, Any] = json.loads(response.read())
            return payload
    except (OSError, urllib.error.URLError, ValueError):
        return None


def stop(agent: AgentHandle, remote: Remote) -> str | None:
    """Stop the unit; the error line, or None."""
    try:
        done = remote.run(f"systemctl stop {shlex.quote(agent.unit)}", timeout=90)
    except RemoteError as exc:
        return str(exc)
    return None if done.rc == 0 else f"agent {agent.name}: systemctl stop failed ({_last(done.stderr)})"


def numeric_leaves(tree: Any, prefix: str) -> dict[str, float]:
    """Every number of a nested summary as a flat `prefix.a.b` figure (booleans and strings left out)."""
    out: dict[str, float] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(numeric_leaves(value, f"{prefix}.{key}"))
    elif isinstance(tree, list):  # e.g. the hotkeys agent's phases, in order
        for index, value in enumerate(tree):
            out.update(numeric_leaves(value, f"{prefix}.{index}"))
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        out[prefix] = float(tree)
    return out


def _last(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "no message")
