"""notify-keyspace-events from what the deployed agents need.

The agents' ACL user may not CONFIG SET (a load agent must not reconfigure the system under test), so the server
has to start with the flags every agent on it subscribes to. kvstore_agent_notify_needs reads an agent host's
instances (kind + config, as roles/agents deploys them; playbooks/kvstore_agent_needs.yml runs it there, since
another host's view of them has no `hostvars` to template them with); kvstore_agent_notify_flags returns the flags
the agents that point at one deployment need: an observer's listeners keyspace events of string commands (K$), an expiry consumer the `expired`
keyevents (Ex). An agent points at the deployment when one of its endpoints is an instance of it (address and
port) or it follows a Sentinel master name that monitors it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# what each kind of agent subscribes to, in the order the value is written ("K$Ex", as people write it)
_NEEDS = ("K$", "Ex")
# the event classes "A" stands for
_ALIASED_BY_A = set("g$lshzxetd")


def _endpoints_of(kind: str, config: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], list[str], str]:
    """(endpoints, Sentinel master names, flags needed) of one agent instance; flags "" when it needs none."""
    if kind == "observer":
        writer = config.get("writer") or {}
        endpoints = [writer.get("endpoint") or {}] + [lst.get("endpoint") or {} for lst in config.get("listeners") or []]
        names = [(writer.get("sentinel") or {}).get("master_name", "")]
        # only listeners subscribe; a writer-only instance (seed 003's) still shares its deployment's flags
        return endpoints, names, "K$"
    if kind == "expiry" and config.get("role") == "consumer":
        target = config.get("target") or {}
        names = [target.get("master_name", "mymaster")] if target.get("mode") == "sentinel" else []
        return list(target.get("nodes") or []), names, "Ex"
    return [], [], ""


def kvstore_agent_notify_needs(instances: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What each agent instance that subscribes to keyspace events needs, without its secrets: the endpoints
    (host, port) and Sentinel master names it points at, and the flags. Worked out on the agent's own host, where
    its config can be templated."""
    needs = []
    for instance in instances:
        endpoints, masters, flags = _endpoints_of(str(instance.get("kind", "")), instance.get("config") or {})
        if flags:
            needs.append({
                "agent": str(instance.get("name", "")),
                "endpoints": [[str(e.get("host", "")), int(e.get("port", 0) or 0)] for e in endpoints if e],
                "masters": [str(m) for m in masters if m],
                "flags": flags,
            })
    return needs


def kvstore_agent_notify_flags(
    needs: Iterable[Mapping[str, Any]],
    addresses: Iterable[str],
    ports: Iterable[int],
    sentinel_names: Iterable[str] = (),
) -> str:
    """The flags the agents (kvstore_agent_notify_needs of every agent host) pointing at this deployment need ("" when
    none does)."""
    addresses = {str(a) for a in addresses}
    ports = {int(p) for p in ports}
    names = {str(n) for n in sentinel_names if n}
    needed: set[str] = set()  # entries of _NEEDS
    for need in needs:
        hit = any(str(host) in addresses and int(port) in ports for host, port in need.get("endpoints") or [])
        if hit or names.intersection(need.get("masters") or []):
            needed.add(str(need["flags"]))
    return "".join(n for n in _NEEDS if n in needed)


def kvstore_notify_union(current: str, needed: str) -> str:
    """`current` with the flags of `needed` it lacks appended (an "A" in `current` covers the event classes; the
    agents' kvagent.clients.keyevents.with_notify_flags applies the same rule)."""
    current = current or ""
    missing = "".join(f for f in needed if f not in current and not (f in _ALIASED_BY_A and "A" in current))
    return current + missing


def kvstore_notify_merge(values: Iterable[str]) -> str:
    """One notify-keyspace-events value holding every flag of `values`, the first value's flags first."""
    merged = ""
    for value in values:
        merged = kvstore_notify_union(merged, value or "")
    return merged


class FilterModule:
    def filters(self):
        return {
            "kvstore_agent_notify_needs": kvstore_agent_notify_needs,
            "kvstore_agent_notify_flags": kvstore_agent_notify_flags,
            "kvstore_notify_merge": kvstore_notify_merge,
        }
