"""From a scenario's fault entry (a dict) to a Fault object, validated before anything is touched."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvtestbed.faults.base import DEFAULT_GRACE_S, Fault, FaultContext, FaultSpec
from kvtestbed.faults.deadman import check_id
from kvtestbed.faults.errors import FaultSpecError
from kvtestbed.faults.host import ClockFault, RebootFault
from kvtestbed.faults.network import NetemFault, PartitionFault, ShapeFault
from kvtestbed.faults.process import KillFault, PauseFault, StopFault
from kvtestbed.faults.targets import PrimaryOf
from kvtestbed.inventory import Inventory
from kvtestbed.project import ProjectError, project_root
from kvtestbed.remote import Remotes, is_local

KINDS: dict[str, type[Fault]] = {cls.kind: cls for cls in (KillFault, StopFault, PauseFault, PartitionFault,
                                                         ShapeFault, NetemFault, RebootFault, ClockFault)}
# a fault entry's keys; `at` belongs to the runner's schedule and is accepted and ignored here
_KEYS = {"kind", "group", "target", "for", "service", "params", "id", "at"}
_NO_SERVICE = {"partition", "shape", "netem", "clock", "reboot"}


def _positive(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FaultSpecError(f"fault {name}: {value!r} is not a number of seconds") from None
    if number <= 0:
        raise FaultSpecError(f"fault {name}: {value!r} must be more than 0 seconds")
    return number


def parse_spec(spec: dict[str, Any]) -> FaultSpec:
    """The entry's fields, checked for shape (kinds, required fields, types); params are the kind's to check."""
    if not isinstance(spec, dict):
        raise FaultSpecError(f"fault: an entry must be a mapping, not {type(spec).__name__}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise FaultSpecError(f"fault: unknown fields {', '.join(sorted(unknown))} ({', '.join(sorted(_KEYS))})")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise FaultSpecError(f"fault kind {kind!r}: not one of {', '.join(KINDS)}")
    for name in ("group", "target"):
        if not isinstance(spec.get(name), str) or not spec[name]:
            raise FaultSpecError(f"fault {kind}: {name} is required (a string)")
    for_s = _positive(spec["for"], "for") if spec.get("for") is not None else None
    if KINDS[kind].needs_for and for_s is None:
        raise FaultSpecError(f"fault {kind}: `for` is required (seconds until heal)")
    service = spec.get("service")
    if service is not None and kind in _NO_SERVICE:
        raise FaultSpecError(f"fault {kind}: takes no service (it acts on hosts, not units)")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise FaultSpecError(f"fault {kind}: params must be a mapping")
    fault_id = str(spec.get("id") or "")
    if fault_id:
        try:
            check_id(fault_id)
        except ValueError as exc:
            raise FaultSpecError(str(exc)) from None
    return FaultSpec(kind=kind, group=spec["group"], target=spec["target"], for_s=for_s,
                     service=str(service) if service is not None else None, params=dict(params), id=fault_id)


def check_managed(spec: FaultSpec, inventory: Inventory) -> None:
    """FaultSpecError when the fault would act on a host the runner does not manage: one Ansible reaches with
    `ansible_connection: local` (existing-cluster mode, docs/existing-cluster.md). Faults need SSH and the
    testbed's units, dead-man timers and nft table on the host; a user's own servers have none of them."""
    mode = "(existing-cluster mode runs writers, Locust load and checks only)"
    for host in inventory.group(spec.group):
        if is_local(host):
            raise FaultSpecError(f"faults need SSH to the hosts of group {spec.group}: host {host.name} has "
                                 f"ansible_connection local {mode}")
    if spec.kind == "partition" and str(spec.params.get("shape", "isolate")) == "isolate":
        # an isolated host's peers, every other host of the inventory, get rules of their own too
        for host in inventory.all_hosts():
            if is_local(host):
                raise FaultSpecError(f"a partition isolate changes every host of the inventory: host {host.name} "
                                     f"has ansible_connection local {mode}")


def default_secrets_dir(inventory: Inventory) -> Path:
    """testbed_secrets_dir when the inventory sets it, else the checkout's secrets/."""
    for host in inventory.all_hosts():
        if host.vars.get("testbed_secrets_dir"):
            return Path(str(host.vars["testbed_secrets_dir"]))
    try:
        return project_root() / "secrets"
    except ProjectError:
        return Path("secrets")


def make_context(inventory: Inventory, remotes: Remotes | None = None, clock: Callable[[], float] | None = None,
                 primary_of: PrimaryOf | None = None, seed: int | None = None, secrets_dir: Path | None = None,
                 grace_s: float = DEFAULT_GRACE_S) -> FaultContext:
    start = time.monotonic()
    return FaultContext(inventory=inventory, remotes=remotes or Remotes(),
                        clock=clock or (lambda: time.monotonic() - start), rng=random.Random(seed),
                        secrets_dir=secrets_dir or default_secrets_dir(inventory), primary_of=primary_of,
                        grace_s=grace_s)


def make_fault(spec: dict[str, Any], inventory: Inventory, context: FaultContext | None = None) -> Fault:
    """A validated fault, ready to inject(); FaultSpecError (one line) when the entry or its params are wrong."""
    parsed = parse_spec(spec)
    if parsed.group not in inventory.groups:
        raise FaultSpecError(f"fault {parsed.kind}: group '{parsed.group}' not found in inventory {inventory.source}")
    check_managed(parsed, inventory)
    fault = KINDS[parsed.kind](parsed, context or make_context(inventory))
    fault.check()
    return fault
