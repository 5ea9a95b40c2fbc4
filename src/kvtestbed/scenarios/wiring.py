"""What a scenario's names mean in an inventory: group vars for stage 2, a writer's Sentinel target, the primary.

Kept apart from the runner so each piece can be read (and tested) against a real inventory without running
anything: the inventory decides where the Sentinels are and which secrets file holds which password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvtestbed.accounting import ClusterTarget, JetStreamTarget, NodeSet, NodeTarget, Peer, SentinelTarget
from kvtestbed.inventory import Host, Inventory

SENTINEL_GROUP = "sentinel"
DEFAULT_SENTINEL_PORT = 26379
DATA_USER = "agent"  # the kvstore role's ACL user for clients (kvstore_acl_users): all data commands, no admin
NATS_USER = "agent"  # a user of the nats role's JetStream account (nats_accounts), password in secrets/nats_<user>
NATS_PORT = 4222


class WiringError(ValueError):
    """One line naming what the inventory lacks."""


def group_views(inventory: Inventory) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """(group -> host names, group -> the vars of its first host): what scenarios.check_against reads."""
    groups = {name: list(hosts) for name, hosts in inventory.groups.items()}
    group_vars: dict[str, dict[str, Any]] = {}
    for name, hosts in groups.items():
        if hosts:
            group_vars[name] = dict(inventory.host(hosts[0]).vars)
    return groups, group_vars


def _sentinels(inventory: Inventory) -> list[Host]:
    return inventory.group(SENTINEL_GROUP) if SENTINEL_GROUP in inventory.groups else []


def monitor_name(inventory: Inventory, group: str) -> str:
    """The Sentinel monitor name of a key-value group (sentinel_monitors[].group == group)."""
    for host in _sentinels(inventory):
        for monitor in host.vars.get("sentinel_monitors") or []:
            if isinstance(monitor, dict) and monitor.get("group") == group:
                return str(monitor["name"])
    raise WiringError(f"group {group}: no Sentinel monitors it (sentinel_monitors in the inventory)")


def sentinel_target(inventory: Inventory, group: str, secrets_dir: Path) -> SentinelTarget:
    """The Sentinel-managed set `group` as the accounting writers see it, with the secrets files that the roles
    generate (sentinel-admin for the Sentinels' requirepass, <group>-agent for the data user)."""
    sentinels = _sentinels(inventory)
    if not sentinels:
        raise WiringError(f"group {group}: the inventory has no {SENTINEL_GROUP} group to find its primary with")
    service = monitor_name(inventory, group)
    addresses = tuple(
        (host.address, int(host.vars.get("sentinel_port") or DEFAULT_SENTINEL_PORT)) for host in sentinels
    )
    sentinel_password = secrets_dir / "sentinel-admin"
    data_password = secrets_dir / f"{group}-{DATA_USER}"
    for path in (sentinel_password, data_password):
        if not path.is_file():
            raise WiringError(f"secrets file {path} is missing (run kvtestbed deploy on this inventory first)")
    return SentinelTarget(
        sentinels=addresses,
        service=service,
        sentinel_password_file=sentinel_password,
        username=DATA_USER,
        password_file=data_password,
    )


def host_of(inventory: Inventory, address: str | None) -> str | None:
    """`host:port` or a bare address -> the inventory host name, when one has it."""
    if not address:
        return None
    host = inventory.by_address(address.rsplit(":", 1)[0])
    return host.name if host is not None else None


def load_target(inventory: Inventory, target: str, secrets_dir: Path) -> tuple[str, str, dict[str, str]]:
    """A scenario's `load.target` as kvload sees it: (URL, password file, extra options).

    A URL is taken as it is. A group monitored by Sentinel becomes redis+sentinel:// with every Sentinel and the
    monitor name; any other key-value group redis:// to its configured primary (or first host). The password is
    the data user's file (secrets/<group>-agent), never part of the URL.
    """
    if "://" in target:
        return target, "", {}
    members = inventory.group(target)
    if not members:
        raise WiringError(f"load.target {target}: the group has no hosts")
    settings = members[0].vars.get(f"{target}_kvstore")
    if not isinstance(settings, dict):
        raise WiringError(f"load.target {target}: not a key-value group ({target}_kvstore is not set); give a URL")
    password = secrets_dir / f"{target}-{DATA_USER}"
    if not password.is_file():
        raise WiringError(f"secrets file {password} is missing (run kvtestbed deploy on this inventory first)")
    port = int((settings.get("ports") or [6379])[0])
    try:
        service = monitor_name(inventory, target)
    except WiringError:
        service = None
    if service is not None:
        sentinels = ",".join(
            f"{host.address}:{int(host.vars.get('sentinel_port') or DEFAULT_SENTINEL_PORT)}"
            for host in _sentinels(inventory)
        )
        options = {"sentinel-password-file": str(secrets_dir / "sentinel-admin")}
        return f"redis+sentinel://{DATA_USER}@{sentinels}/{service}", str(password), options
    if settings.get("topology") == "cluster":
        nodes = ",".join(f"{host.address}:{port}" for host in members)
        return f"redis+cluster://{DATA_USER}@{nodes}", str(password), {}
    primary = inventory.host(str(settings["primary"])) if settings.get("primary") else members[0]
    return f"redis://{DATA_USER}@{primary.address}:{port}", str(password), {}


def _require(path: Path) -> Path:
    if not path.is_file():
        raise WiringError(f"secrets file {path} is missing (run kvtestbed deploy on this inventory first)")
    return path


def cluster_target(inventory: Inventory, group: str, secrets_dir: Path) -> ClusterTarget:
    """A Redis Cluster group as a writer sees it: every instance of every host as a startup node."""
    members = inventory.group(group)
    settings = members[0].vars.get(f"{group}_kvstore") if members else None
    if not isinstance(settings, dict) or settings.get("topology") != "cluster":
        raise WiringError(f"group {group}: not a Redis Cluster ({group}_kvstore.topology is not cluster)")
    ports = [int(port) for port in settings.get("ports") or [7000]]
    nodes = tuple((host.address, port) for host in members for port in ports)
    return ClusterTarget(nodes=nodes, username=DATA_USER, password_file=_require(secrets_dir / f"{group}-{DATA_USER}"))


def jetstream_target(inventory: Inventory, group: str, secrets_dir: Path, writer: str, run_tag: str
                     ) -> JetStreamTarget:
    """A stream of this run's own for one writer (KVT_ACCT_<tag>_<WRITER>, subject kvt.acct.<tag>.<writer>), so a
    read-back counts this run's messages only."""
    members = inventory.group(group)
    if not members:
        raise WiringError(f"group {group}: no NATS server in it")
    token = "".join(ch if ch.isalnum() else "_" for ch in writer)
    return JetStreamTarget(
        servers=tuple(f"nats://{host.address}:{NATS_PORT}" for host in members),
        stream=f"KVT_ACCT_{run_tag}_{token}".upper(),
        subject=f"kvt.acct.{run_tag}.{token}",
        user=NATS_USER,
        password_file=_require(secrets_dir / f"nats_{NATS_USER}"),
    )


def node_set(inventory: Inventory, group: str, secrets_dir: Path) -> NodeSet:
    """Every node of a key-value group (its first port, `<group>_kvstore.ports[0]`, on each host) with the data
    user's secrets file, for `node` writers and the read on every node after the heal. The nodes of a mesh or a
    replication set replicate to one another; a standalone group's hosts are independent servers."""
    members = inventory.group(group)
    settings = members[0].vars.get(f"{group}_kvstore") if members else None
    if not isinstance(settings, dict):
        raise WiringError(f"group {group}: not a key-value group ({group}_kvstore is not set)")
    topology = str(settings.get("topology") or "standalone")
    if topology == "cluster":
        raise WiringError(f"group {group}: a Redis Cluster keeps a key on one shard, not on every node")
    port = int((settings.get("ports") or [6379])[0])
    return NodeSet(
        group=group,
        peers=tuple(Peer(host.name, host.address, port) for host in members),
        username=DATA_USER,
        password_file=_require(secrets_dir / f"{group}-{DATA_USER}"),
        converges=topology in ("mesh", "replication"),
    )


def node_target(inventory: Inventory, group: str, host: str, secrets_dir: Path) -> NodeTarget:
    """The one node a `node` writer writes to (host must be in the group)."""
    nodes = node_set(inventory, group, secrets_dir)
    if host not in {peer.name for peer in nodes.peers}:
        raise WiringError(f"host {host!r} is not in group {group!r} ({', '.join(p.name for p in nodes.peers)})")
    return NodeTarget(nodes, host)


def kv_instances(inventory: Inventory, groups: list[str] | None = None) -> list[tuple[str, Host, int]]:
    """(group, host, port) of every key-value instance the inventory deploys (`<group>_kvstore.ports`), in the
    given groups or all of them."""
    found = []
    for group in groups if groups is not None else sorted(inventory.groups):
        if group not in inventory.groups:
            continue
        for host in inventory.group(group):
            kvstore = host.vars.get(f"{group}_kvstore")
            if isinstance(kvstore, dict):
                found.extend((group, host, int(port)) for port in kvstore.get("ports") or [])
    return found


def heal_engine_tool_users(inventory: Inventory, secrets_dir: Path, groups: list[str] | None = None) -> list[str]:
    """Remove the engine tools' kvt-bench-* ACL users a killed runner left (kvtestbed.load.engine_tools), one line
    per user removed; instances that do not answer are left alone (they may be down on purpose)."""
    from kvtestbed.load.engine_tools import EngineToolError, heal_leftover_users

    lines = []
    for group, host, port in kv_instances(inventory, groups):
        password_file = secrets_dir / f"{group}-admin"
        if not password_file.is_file():
            continue
        try:
            removed = heal_leftover_users(host.address, port, "admin", password_file)
        except EngineToolError:
            continue
        lines.extend(f"{host.name}: removed ACL user {name} on port {port}" for name in removed)
    return lines
