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
DEFAULT_METRICS_PORT = 9400
HEALTH_TIMEOUT_S = 60.0


class AgentError(Exception):
    """One line naming the agent and what to fix."""


@dataclass
class AgentHandle:
    name: str
    host: Host
    metrics_host: str
    metrics_port: int
    summary: dict[str, Any] = field(default_factory=dict)  # the /hdr summary collected at the end

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
            service = (yaml.safe_load(done.stdout) or {}).get("service") or {}
        except yaml.YAMLError:
            raise AgentError(f"agent {name} on {host.name}: {path} does not parse (redeploy it)") from None
        return AgentHandle(
            name=name,
            host=host,
            metrics_host=str(service.get("metrics_host") or host.address),
            metrics_port=int(service.get("metrics_port") or DEFAULT_METRICS_PORT),
        )
    where = f"host {host_name}" if host_name else "any host of group agents"
    raise AgentError(f"agent {name}: not deployed on {where} (add it to agents_instances and run kvtestbed deploy)")


def _health(agent: AgentHandle) -> bool:
    try:
        with urllib.request.urlopen(f"{agent.url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


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
        with urllib.request.urlopen(f"{agent.url}/hdr", timeout=10) as response:
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
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        out[prefix] = float(tree)
    return out


def _last(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "no message")
