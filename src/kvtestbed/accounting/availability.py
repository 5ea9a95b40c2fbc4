"""Failover time and unavailability from a client's op log, beside the servers' own record of the switch.

- unavailability_s: the longest stretch of the measured phase with no successful op of the client, measured
  between completions (t_end) of ok ops, the phase's edges counting as bounds; the window is returned too.
- failover_s: from a fault's t_inject to the first ok op (its t_end) on a node other than the pre-fault primary
  (the node of the client's last ok op before the fault, unless the runner knows it better); failover_to names
  that node. None when the client never succeeded elsewhere.
  That is the Sentinel writers' definition; a cluster writer's is failover_new_node, a JetStream writer's and a
  node writer's failover_first_ok_after (FAILOVER_BY_KIND, docs/accounting.md).
- servers_failover: the servers' own switches from the timeline (Sentinel's `+switch-master`, the cluster's
  promotions, the stream's new leader), the earliest hearing per switch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kvtestbed.accounting.oplog import OpRecord


def _ok_ends(ops: Iterable[OpRecord]) -> list[tuple[float, str | None]]:
    return sorted((op.t_end, op.node) for op in ops if op.result == "ok" and op.t_end is not None)


def unavailability(
    ops: Sequence[OpRecord], phase: tuple[float, float] | None = None
) -> tuple[float, tuple[float, float] | None]:
    """(longest window without an ok op, [start, end]) within `phase` (default: from the first op's intended time
    to the last op's end)."""
    if phase is None:
        if not ops:
            return 0.0, None
        ends = [op.t_end if op.t_end is not None else op.t_start for op in ops]
        phase = (min(op.t_intended for op in ops), max(ends))
    start, end = phase
    bounds = [start, *(t for t, _ in _ok_ends(ops) if start < t < end), end]
    best, window = 0.0, None
    for left, right in zip(bounds, bounds[1:], strict=False):
        if right - left > best:
            best, window = right - left, (round(left, 6), round(right, 6))
    return round(best, 6), window


@dataclass(frozen=True)
class Failover:
    t_inject: float
    primary_before: str | None
    failover_s: float | None
    failover_to: str | None


def primary_before(ops: Sequence[OpRecord], t_inject: float) -> str | None:
    """The node of the client's last ok op that ended before the fault."""
    before = [(t, node) for t, node in _ok_ends(ops) if t <= t_inject]
    return before[-1][1] if before else None


def failover(ops: Sequence[OpRecord], t_inject: float, known_primary: str | None = None) -> Failover:
    old = known_primary or primary_before(ops, t_inject)
    if old is None:
        return Failover(t_inject, None, None, None)
    for t, node in _ok_ends(ops):
        if t > t_inject and node is not None and node != old:
            return Failover(t_inject, old, round(t - t_inject, 6), node)
    return Failover(t_inject, old, None, None)


def failover_new_node(ops: Sequence[OpRecord], t_inject: float, known_before: Iterable[str] | None = None
                      ) -> Failover:
    """Cluster writers: from the fault to the first ok op on a node that acknowledged nothing before the fault
    (by default the nodes of the client's ok ops before it, i.e. the masters it was writing to): the first write a
    promoted replica acknowledged. `primary_before` lists the old nodes, comma-separated."""
    before = set(known_before) if known_before is not None else {n for t, n in _ok_ends(ops) if t <= t_inject and n}
    if not before:
        return Failover(t_inject, None, None, None)
    old = ",".join(sorted(before))
    for t, node in _ok_ends(ops):
        if t > t_inject and node is not None and node not in before:
            return Failover(t_inject, old, round(t - t_inject, 6), node)
    return Failover(t_inject, old, None, None)


def failover_first_ok_after(ops: Sequence[OpRecord], t_inject: float) -> Failover:
    """JetStream writers: from the fault to the first ok op sent after it (the stream acknowledges through any
    server, so a node change says nothing: any ack after the fault came from a leader that had it)."""
    sent_after = sorted((op.t_end, op.node) for op in ops
                        if op.result == "ok" and op.t_end is not None and op.t_start >= t_inject)  # fmt: skip
    if not sent_after:
        return Failover(t_inject, None, None, None)
    t, node = sent_after[0]
    return Failover(t_inject, None, round(t - t_inject, 6), node)


FailoverFn = Callable[[Sequence[OpRecord], float], Failover]
FAILOVER_BY_KIND: dict[str, FailoverFn] = {
    "sentinel": failover,
    "cluster": failover_new_node,
    "jetstream": failover_first_ok_after,
    "node": failover_first_ok_after,  # one node, no failover: the time to the first ok op sent after the fault
}

# The servers' own record of a role change, per source: (event name, the detail field naming the set)
SERVER_SWITCH_EVENTS: dict[str, tuple[str, str | None]] = {
    "sentinel": ("+switch-master", "master"),
    "cluster": ("+failover", None),
    "nats": ("+leader", "stream"),
}


def faults_on_hosts(records: Iterable[dict[str, Any]], hosts: Iterable[str]) -> list[dict[str, Any]]:
    """The fault records (faults.jsonl objects, in injection order) that hit at least one of `hosts`: a writer's
    failover is timed from the first fault on its own group, not from a fault elsewhere in the run."""
    wanted = set(hosts)
    return [r for r in records if wanted & set(r.get("hosts") or ())]


def servers_failover(timeline: Iterable[dict[str, Any]], service: str | None = None) -> list[dict[str, Any]]:
    """[{source, t, from, to}] for each switch the servers announced, earliest hearing of each: the Sentinels'
    `+switch-master`, the cluster watch's `+failover`, the stream leader watch's `+leader` (a first sighting of a
    leader, with no `from`, is not a switch). `service` keeps the switches of one Sentinel master or stream."""
    earliest: dict[tuple[str, str, str], float] = {}
    for event in timeline:
        source = event.get("source")
        if source not in SERVER_SWITCH_EVENTS or event.get("event") != SERVER_SWITCH_EVENTS[source][0]:
            continue
        detail = event.get("detail") or {}
        field = SERVER_SWITCH_EVENTS[source][1]
        if service is not None and field is not None and detail.get(field) != service:
            continue
        if detail.get("from") is None:
            continue
        key = (str(source), str(detail.get("from")), str(detail.get("to")))
        t = float(event["t"])
        if key not in earliest or t < earliest[key]:
            earliest[key] = t
    return [
        {"source": key[0], "t": t, "from": key[1], "to": key[2]}
        for key, t in sorted(earliest.items(), key=lambda item: item[1])
    ]


def servers_switch_after(switches: Sequence[dict[str, Any]], t_inject: float, old: str | None) -> dict[str, Any] | None:
    """The first Sentinel switch after the fault (away from `old` when it is known)."""
    olds = set(old.split(",")) if old else None  # a cluster client's old nodes are a list
    for switch in switches:
        if switch["t"] >= t_inject and (olds is None or switch["from"] in olds):
            return switch
    return None


def compare_failover(ops: Sequence[OpRecord], t_inject: float, switches: Sequence[dict[str, Any]],
                     known_primary: str | None = None, kind: str = "sentinel") -> dict[str, Any]:
    """The client's failover time beside the servers' (Sentinel's switch, the cluster's promotion, the stream's new
    leader): both from t_inject, and their difference. `kind` picks the client's definition (FAILOVER_BY_KIND)."""
    client = failover(ops, t_inject, known_primary) if kind == "sentinel" else FAILOVER_BY_KIND[kind](ops, t_inject)
    switch = servers_switch_after(switches, t_inject, client.primary_before)
    servers_s = round(switch["t"] - t_inject, 6) if switch else None
    return {
        "t_inject": t_inject,
        "primary_before": client.primary_before,
        "failover_s": client.failover_s,
        "failover_to": client.failover_to,
        "servers_failover_s": servers_s,
        "servers_to": switch["to"] if switch else None,
        "client_minus_servers_s": (
            round(client.failover_s - servers_s, 6) if client.failover_s is not None and servers_s is not None
            else None
        ),
    }
