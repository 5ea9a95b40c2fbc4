"""Which hosts a fault hits: `primary | replica | one | minority | majority | all | leader:<stream> | <host>` within
a group.

`primary` and `replica` are asked of the servers at fault time: the caller's `primary_of(group)` first, then
the Sentinels (for a group a Sentinel monitors: the address most Sentinels name), then ROLE (a plain replication
set), then the JetStream meta leader (nats). `leader:<stream>` is the server that leads that JetStream stream now
(its Raft group, not the meta leader: killing the meta leader leaves a stream's leader in place). Random picks use
the caller's Random so that a seeded run picks the same hosts again.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from kvtestbed.faults.errors import FaultError, FaultSpecError
from kvtestbed.inventory import Host, Inventory, InventoryError

ROLES = ("primary", "replica", "one", "minority", "majority", "all")
STREAM_LEADER = "leader:"  # + a JetStream stream name
SENTINEL_PORT = 26379
NATS_MONITOR_PORT = 8222
ASK_TIMEOUT_S = 2.0

PrimaryOf = Callable[[str], str]


def minority_size(n: int) -> int:
    """The largest minority of n hosts (1 of 3, 2 of 5, 1 of 2)."""
    return (n - 1) // 2


def majority_size(n: int) -> int:
    """The smallest majority of n hosts (2 of 3, 3 of 5, 2 of 2)."""
    return n // 2 + 1


def _secret(secrets_dir: Path, name: str) -> str | None:
    try:
        return (secrets_dir / name).read_text().strip()
    except OSError:
        return None


def _host_of_address(inventory: Inventory, address: str) -> str | None:
    for host in inventory.all_hosts():
        if address in (host.address, host.vars.get("kvstore_address")):
            return host.name
    return None


def sentinel_primary(inventory: Inventory, group: str, secrets_dir: Path) -> str | None:
    """The host most Sentinels name as the primary of the monitor watching `group`; None if none watches it."""
    import redis

    for sentinel_host in inventory.all_hosts():
        monitors = sentinel_host.vars.get("sentinel_monitors") or []
        monitor = next((m for m in monitors if isinstance(m, dict) and m.get("group") == group), None)
        if monitor:
            break
    else:
        return None
    sentinel_group = str(sentinel_host.vars.get("sentinel_group", "sentinel"))
    secret_name = (sentinel_host.vars.get("sentinel_name") or sentinel_group) + "-admin"
    password = _secret(secrets_dir, secret_name)
    port = int(sentinel_host.vars.get("sentinel_port", SENTINEL_PORT))
    votes: Counter[str] = Counter()
    hosts = inventory.group(sentinel_group) if sentinel_group in inventory.groups else [sentinel_host]
    for host in hosts:
        try:
            client = redis.Redis(host=host.address, port=port, password=password, socket_timeout=ASK_TIMEOUT_S,
                                 socket_connect_timeout=ASK_TIMEOUT_S, decode_responses=True)
            answer = client.execute_command("SENTINEL", "get-master-addr-by-name", monitor["name"])
            client.close()
        except redis.RedisError:
            continue
        if answer:
            votes[str(answer[0])] += 1
    if not votes:
        raise FaultError(f"group {group}: no Sentinel of {sentinel_group} answered (is {secret_name} in "
                         f"{secrets_dir}?)")
    address, _ = votes.most_common(1)[0]
    name = _host_of_address(inventory, address)
    if name is None:
        raise FaultError(f"group {group}: the Sentinels name {address} as primary, which is no inventory host")
    return name


def role_primary(inventory: Inventory, group: str, secrets_dir: Path) -> str | None:
    """The host whose first instance answers ROLE with master, for a plain replication set; None otherwise."""
    import redis

    settings = inventory.group(group)[0].vars.get(f"{group}_kvstore") if inventory.group(group) else None
    if not isinstance(settings, dict) or settings.get("topology") != "replication":
        return None
    port = int(settings.get("ports", [6379])[0])
    password = _secret(secrets_dir, f"{settings.get('secrets_name', group)}-admin")
    for host in inventory.group(group):
        try:
            client = redis.Redis(host=host.address, port=port, username="admin" if password else None,
                                 password=password, socket_timeout=ASK_TIMEOUT_S,
                                 socket_connect_timeout=ASK_TIMEOUT_S, decode_responses=True)
            role = client.execute_command("ROLE")
            client.close()
        except redis.RedisError:
            continue
        if role and role[0] == "master":
            return host.name
    raise FaultError(f"group {group}: no instance on port {port} answers ROLE as master")


def nats_meta_leader(inventory: Inventory, group: str) -> str | None:
    """The JetStream meta leader (its server_name is the inventory host name by default)."""
    if group != "nats":
        return None
    for host in inventory.group(group):
        port = int(host.vars.get("nats_monitor_port", NATS_MONITOR_PORT))
        try:
            with urllib.request.urlopen(f"http://{host.address}:{port}/jsz", timeout=ASK_TIMEOUT_S) as reply:
                leader = json.load(reply).get("meta_cluster", {}).get("leader")
        except (OSError, ValueError):
            continue
        if leader:
            return _server_to_host(inventory, group).get(leader, leader)
    raise FaultError(f"group {group}: no NATS server answered /jsz with a meta leader")


def _server_to_host(inventory: Inventory, group: str) -> dict[str, str]:
    return {str(h.vars.get("nats_server_name", h.name)): h.name for h in inventory.group(group)}


def nats_stream_leader(inventory: Inventory, group: str, stream: str) -> str:
    """The host leading JetStream stream `stream` now, as the first server that knows the stream says."""
    for host in inventory.group(group):
        port = int(host.vars.get("nats_monitor_port", NATS_MONITOR_PORT))
        url = f"http://{host.address}:{port}/jsz?accounts=true&streams=true"
        try:
            with urllib.request.urlopen(url, timeout=ASK_TIMEOUT_S) as reply:
                accounts = json.load(reply).get("account_details") or []
        except (OSError, ValueError):
            continue
        for account in accounts:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    leader = (detail.get("cluster") or {}).get("leader")
                    if leader:
                        return _server_to_host(inventory, group).get(leader, leader)
    raise FaultError(f"group {group}: no NATS server reports a leader for stream {stream} (does the stream exist "
                     "yet? a scenario's agent or writer creates it before the fault)")


def builtin_primary(inventory: Inventory, group: str, secrets_dir: Path) -> str:
    for resolver in (sentinel_primary, role_primary):
        found = resolver(inventory, group, secrets_dir)
        if found:
            return found
    found = nats_meta_leader(inventory, group)
    if found:
        return found
    raise FaultSpecError(f"group {group}: target primary/replica needs a Sentinel-managed, replication or nats "
                         "group (or a primary_of from the caller)")


def resolve(inventory: Inventory, group: str, target: str, rng: random.Random,
            primary_of: PrimaryOf | None = None, secrets_dir: Path | None = None) -> list[Host]:
    """The hosts of `group` that `target` names, now."""
    try:
        members = inventory.group(group)
    except InventoryError as exc:
        raise FaultSpecError(str(exc)) from None
    if not members:
        raise FaultSpecError(f"group {group} has no hosts")
    names = [host.name for host in members]
    if target in ("primary", "replica"):
        primary = primary_of(group) if primary_of else builtin_primary(inventory, group, secrets_dir or Path("."))
        if primary not in names:
            raise FaultError(f"group {group}: primary {primary} is not one of its hosts")
        if target == "primary":
            return [inventory.host(primary)]
        replicas = [host for host in members if host.name != primary]
        if not replicas:
            raise FaultError(f"group {group}: no replica besides the primary {primary}")
        return [rng.choice(replicas)]
    if target.startswith(STREAM_LEADER):
        leader = nats_stream_leader(inventory, group, target.removeprefix(STREAM_LEADER))
        if leader not in names:
            raise FaultError(f"group {group}: stream leader {leader} is not one of its hosts")
        return [inventory.host(leader)]
    if target == "one":
        return [rng.choice(members)]
    if target == "all":
        return list(members)
    if target in ("minority", "majority"):
        size = minority_size(len(members)) if target == "minority" else majority_size(len(members))
        if size == 0:
            raise FaultSpecError(f"group {group}: {len(members)} host(s) have no minority")
        return sorted(rng.sample(members, size), key=lambda host: names.index(host.name))
    if target in names:
        return [inventory.host(target)]
    raise FaultSpecError(f"target {target!r}: not one of {', '.join(ROLES)}, {STREAM_LEADER}<stream> nor a host of "
                         f"group {group} ({', '.join(names)})")
