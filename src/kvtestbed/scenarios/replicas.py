"""`replicas: {<group>: N}`: a run with only N replicas attached to a replication set's primary.

The deployed topology stays as it is; for the run the runner stops the key-value service of the replicas beyond N
(picked with the run's seeded Random among the hosts that are replicas now), as `stop` faults: each arms its
dead-man timer on the host first, so the replicas come back even if the runner dies, and is healed and verified
with the run's other faults before the checks. A sweep over N (`sweep: {replicas.redis: [2, 1, 0]}`) is the
replica-count scalability axis without a deploy per point.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from kvtestbed.faults import Fault, FaultError, make_fault
from kvtestbed.inventory import Inventory
from kvtestbed.remote import RemoteError

# the dead-man's delay beyond the run's own length: the heal normally comes first
DEADMAN_MARGIN_S = 120.0


@dataclass
class Detached:
    group: str
    keep: int
    primary: str
    stopped: list[str]
    faults: list[Fault] = field(default_factory=list)

    def describe(self) -> dict[str, object]:
        return {"replicas_attached": self.keep, "replicas_stopped": list(self.stopped), "primary": self.primary}


def plan(inventory: Inventory, group: str, keep: int, primary: str, rng: random.Random) -> Detached:
    """Which replicas of `group` to stop so that `keep` stay attached to `primary`."""
    replicas = [host.name for host in inventory.group(group) if host.name != primary]
    if keep > len(replicas):
        raise FaultError(f"replicas {group}: {keep} wanted, the group has {len(replicas)} besides {primary}")
    order = [host.name for host in inventory.group(group)]
    stopped = sorted(rng.sample(replicas, len(replicas) - keep), key=order.index)
    return Detached(group, keep, primary, stopped)


def detach(inventory: Inventory, wanted: dict[str, int], primary_of: Callable[[str], str], ctx: object,
           run_length_s: float, rng: random.Random, out: list[Detached]) -> None:
    """Stop the replicas beyond each group's N, appending to `out` as it goes, so that when a host refuses
    (FaultError) the caller still holds, and heals, every replica already stopped."""
    for group, keep in wanted.items():
        detached = plan(inventory, group, keep, primary_of(group), rng)
        out.append(detached)
        for host in detached.stopped:
            spec = {"kind": "stop", "group": group, "target": host, "for": run_length_s + DEADMAN_MARGIN_S,
                    "service": "kv", "params": {}, "id": _fault_id(group, host)}
            fault = make_fault(spec, inventory, ctx)
            detached.faults.append(fault)
            fault.inject()


def _fault_id(group: str, host: str) -> str:
    """A fault id (lower-case letters, digits, dashes; at most 63) from names that may hold dots or underscores."""
    return re.sub(r"[^a-z0-9-]+", "-", f"replicas-{group}-{host}".lower())[:63].strip("-")


def reattach(detached: list[Detached]) -> list[str]:
    """Start every stopped replica again and check it runs; the problems, one line each."""
    problems: list[str] = []
    for entry in detached:
        for fault in entry.faults:
            try:
                fault.heal()
                if fault.injected and not fault.verify():
                    problems.append(fault.error or f"replicas {entry.group}: {fault.id} not running again")
            except (FaultError, RemoteError) as exc:
                problems.append(f"replicas {entry.group}: heal failed: {exc}")
    return problems
