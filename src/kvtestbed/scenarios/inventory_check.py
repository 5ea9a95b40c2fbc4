"""Stage 2: a scenario against an inventory, before anything starts. Input is plain data so that any inventory
reader can feed it: `inventory_groups` {group: [host, ...]} and `group_vars` {group: {var: value}}, the vars as
Ansible resolves them for the group's hosts (a host's hostvars will do). Read here: `<group>_kvstore`
({engine, topology, primary, ...}), `sentinel_monitors` ([{name, group, ...}], any group) and `nats_cluster_group`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kvtestbed.scenarios import schema
from kvtestbed.scenarios.errors import ScenarioError, field_path
from kvtestbed.scenarios.fault_entries import Fault
from kvtestbed.scenarios.spec import Scenario

FieldPath = tuple[str | int, ...]

_KV_ENGINES = ("redis", "valkey", "keydb")


class _Inventory:
    """The facts about groups that the checks need, read once."""

    def __init__(self, groups: Mapping[str, list[str]], group_vars: Mapping[str, Mapping[str, Any]]):
        self.groups = groups
        self.group_vars = group_vars
        self.sentinel_groups = {
            monitor.get("group")
            for variables in group_vars.values()
            for monitor in (variables.get("sentinel_monitors") or [])
            if isinstance(monitor, Mapping)
        }

    def hosts(self, group: str) -> list[str]:
        return list(self.groups.get(group) or [])

    def kvstore(self, group: str) -> Mapping[str, Any] | None:
        value = self.group_vars.get(group, {}).get(f"{group}_kvstore")
        return value if isinstance(value, Mapping) else None

    def is_nats(self, group: str) -> bool:
        variables = self.group_vars.get(group, {})
        return self.kvstore(group) is None and (variables.get("nats_cluster_group") == group or group == "nats")

    def engine(self, group: str) -> str | None:
        kvstore = self.kvstore(group)
        if kvstore is not None:
            return str(kvstore.get("engine") or "") or None
        return "nats" if self.is_nats(group) else None

    def topology(self, group: str) -> str | None:
        kvstore = self.kvstore(group)
        return str(kvstore.get("topology") or "standalone") if kvstore is not None else None

    def has_primary(self, group: str) -> bool:
        return self.is_nats(group) or self.topology(group) == "replication" or group in self.sentinel_groups

    def names(self) -> str:
        return ", ".join(sorted(g for g in self.groups if g not in ("all", "ungrouped"))) or "none"


def check_against(scenario: Scenario, inventory_groups: Mapping[str, list[str]],
                  group_vars: Mapping[str, Mapping[str, Any]],
                  user_classes: Mapping[str, str] | None = None) -> None:
    """Raise ScenarioError (one line) when the inventory cannot run the scenario. user_classes (kvload's catalog,
    kvtestbed.load.runner.available_user_classes()) is checked only when given: listing it costs a subprocess."""
    inventory = _Inventory(inventory_groups, group_vars)

    def fail(path: FieldPath, problem: str) -> ScenarioError:
        return ScenarioError(scenario.source, field_path(path), problem)

    def require_group(group: str, path: FieldPath) -> None:
        if group not in inventory.groups:
            raise fail(path, f"group {group!r} is not in the inventory (groups: {inventory.names()})")
        if not inventory.hosts(group):
            raise fail(path, f"group {group!r} has no hosts in the inventory")

    for i, group in enumerate(scenario.needs.groups):
        require_group(group, ("needs", "groups", i))
    for group, engine in scenario.needs.engines.items():
        path = ("needs", "engines", group)
        require_group(group, path)
        actual = inventory.engine(group)
        if actual is None:
            raise fail(path, f"group {group!r} runs no key-value store or NATS (no {group}_kvstore var)")
        if actual != engine:
            raise fail(path, f"group {group!r} runs {actual}, not {engine}: deploy {engine} there or pick another "
                             "group")
    for group, topology in scenario.needs.topologies.items():
        path = ("needs", "topologies", group)
        require_group(group, path)
        actual = inventory.topology(group)
        if actual is None:
            raise fail(path, f"group {group!r} has no {group}_kvstore var, so no topology")
        if actual != topology:
            raise fail(path, f"group {group!r} is deployed as {actual}, not {topology}")

    for i, writer in enumerate(scenario.writers):
        path = ("writers", i, "group")
        require_group(writer.group, path)
        engine = inventory.engine(writer.group)
        strategy_path = ("writers", i, "strategy")
        if writer.strategy == "jetstream":
            if engine != "nats":
                raise fail(strategy_path, f"jetstream publishes to NATS, and group {writer.group!r} runs "
                                          f"{engine or 'no NATS'}: pick a nats group")
            continue
        if engine not in _KV_ENGINES:
            raise fail(path, f"group {writer.group!r} runs {engine or 'no key-value store'}; writers need redis, "
                             "valkey or keydb (or strategy jetstream for NATS)")
        if writer.host is not None and writer.host not in inventory.hosts(writer.group):
            raise fail(("writers", i, "host"), f"host {writer.host!r} is not in group {writer.group!r} "
                                               f"({', '.join(inventory.hosts(writer.group))})")
        cluster = inventory.topology(writer.group) == "cluster"
        if cluster != (writer.strategy == "cluster"):
            raise fail(strategy_path, f"group {writer.group!r} is {'a' if cluster else 'not a'} Cluster: "
                                      f"use {'cluster' if cluster else 'redis-py or quorum'}")
        if writer.strategy == "quorum" and writer.group not in inventory.sentinel_groups:
            raise fail(("writers", i, "strategy"), f"quorum asks the Sentinels, and no sentinel_monitors entry "
                                                   f"watches group {writer.group!r}: use redis-py")

    for i, fault in enumerate(scenario.faults):
        _check_fault(inventory, fault, ("faults", i), require_group, fail)

    for group, keep in scenario.replicas.items():
        path = ("replicas", group)
        require_group(group, path)
        if inventory.engine(group) not in _KV_ENGINES or not inventory.has_primary(group):
            raise fail(path, f"group {group!r} is not a replication set (a key-value group with a primary: "
                             "topology replication or watched by Sentinel)")
        replicas = len(inventory.hosts(group)) - 1
        if keep > replicas:
            raise fail(path, f"{keep} replicas: group {group!r} has {replicas} besides its primary "
                             f"({', '.join(inventory.hosts(group))})")

    agent_hosts = inventory.hosts("agents")
    for i, agent in enumerate(scenario.agents):
        if agent.host is not None and agent.host not in agent_hosts:
            raise fail(("agents", i, "host"), f"host {agent.host!r} is not in the inventory's agents group "
                                              f"({', '.join(agent_hosts) or 'empty'})")

    if scenario.load is not None:
        if "://" not in scenario.load.target:
            require_group(scenario.load.target, ("load", "target"))
        if user_classes is not None:
            for i, user in enumerate(scenario.load.users):
                if user not in user_classes:
                    raise fail(("load", "users", i), f"unknown user class {user!r} ({', '.join(user_classes)})")


def _check_fault(inventory: _Inventory, fault: Fault, path: FieldPath, require_group: Callable[[str, FieldPath], None],
                 fail: Callable[[FieldPath, str], ScenarioError]) -> None:
    require_group(fault.group, (*path, "group"))
    hosts = inventory.hosts(fault.group)
    target_path = (*path, "target")
    if fault.target in ("primary", "replica") and not inventory.has_primary(fault.group):
        raise fail(target_path, f"group {fault.group!r} has no primary ({inventory.topology(fault.group) or 'no store'}"
                                "): use one, minority, majority, all or a host name")
    if fault.target == "replica" and len(hosts) < 2:
        raise fail(target_path, f"group {fault.group!r} has one host, so no replica")
    if fault.target == "minority" and len(hosts) < 3:
        raise fail(target_path, f"group {fault.group!r} has {len(hosts)} hosts: a minority needs 3 or more")
    if fault.target.startswith(schema.STREAM_LEADER_TARGET):
        if not inventory.is_nats(fault.group):
            raise fail(target_path, f"{fault.target!r}: a stream leader is only in a nats group, not {fault.group!r}")
    elif fault.target not in ("primary", "replica", "one", "minority", "majority", "all") and fault.target not in hosts:
        raise fail(target_path, f"host {fault.target!r} is not in group {fault.group!r} ({', '.join(hosts)})")
    if fault.kind == "partition" and fault.params.get("shape") == "halves" and len(hosts) < 2:
        raise fail((*path, "params", "shape"), f"group {fault.group!r} has one host: nothing to split")
    service = fault.service
    if service == "kv" and inventory.kvstore(fault.group) is None:
        raise fail((*path, "service"), f"group {fault.group!r} has no key-value store (no {fault.group}_kvstore var)")
    if service == "nats" and not inventory.is_nats(fault.group):
        raise fail((*path, "service"), f"group {fault.group!r} is not a NATS group")
    if service is None and inventory.engine(fault.group) is None and fault.kind not in ("partition", "shape", "netem",
                                                                                        "clock", "reboot"):
        raise fail((*path, "service"), f"group {fault.group!r} has no default service (no key-value store or NATS): "
                                       "name one (sentinel, agent:<name>, <unit>.service)")
