"""Failover time and unavailability from a client's op log, beside the servers' own record of the switch.

- unavailability_s: the longest stretch of the measured phase with no successful op of the client, measured
  between completions (t_end) of ok ops, the phase's edges counting as bounds; the window is returned too.
- failover_s: from a fault's t_inject to the first ok op (its t_end) on a node other than the pre-fault primary
  (the node of the client's last ok op before the fault, unless the runner knows it better); failover_to names
  that node. None when the client never succeeded elsewhere.
- servers_failover: the Sentinels' `+switch-master` events from the timeline, the earliest hearing per switch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


def servers_failover(timeline: Iterable[dict[str, Any]], service: str | None = None) -> list[dict[str, Any]]:
    """[{source: sentinel, t, from, to}] for each switch the Sentinels announced (earliest hearing of each)."""
    earliest: dict[tuple[str, str], float] = {}
    for event in timeline:
        if event.get("source") != "sentinel" or event.get("event") != "+switch-master":
            continue
        detail = event.get("detail") or {}
        if service is not None and detail.get("master") != service:
            continue
        pair = (str(detail.get("from")), str(detail.get("to")))
        t = float(event["t"])
        if pair not in earliest or t < earliest[pair]:
            earliest[pair] = t
    return [
        {"source": "sentinel", "t": t, "from": pair[0], "to": pair[1]}
        for pair, t in sorted(earliest.items(), key=lambda item: item[1])
    ]


def servers_switch_after(switches: Sequence[dict[str, Any]], t_inject: float, old: str | None) -> dict[str, Any] | None:
    """The first Sentinel switch after the fault (away from `old` when it is known)."""
    for switch in switches:
        if switch["t"] >= t_inject and (old is None or switch["from"] == old):
            return switch
    return None


def compare_failover(ops: Sequence[OpRecord], t_inject: float, switches: Sequence[dict[str, Any]],
                     known_primary: str | None = None) -> dict[str, Any]:
    """The client's failover time beside the Sentinels': both from t_inject, and their difference."""
    client = failover(ops, t_inject, known_primary)
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
