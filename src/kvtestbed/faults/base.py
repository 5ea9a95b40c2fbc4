"""What every fault shares: the spec, the context it runs in, and the inject → heal → verify life cycle.

A fault resolves its hosts at inject time, then on each affected host (in parallel) records its intent and arms
the dead-man (when it has an undo and a duration), then injects. heal() runs the undo and disarms; verify()
checks that the hosts are back. record() is the faults.jsonl line.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvtestbed.faults import deadman
from kvtestbed.faults.errors import FaultError
from kvtestbed.faults.targets import PrimaryOf, resolve
from kvtestbed.inventory import Host, Inventory
from kvtestbed.remote import RemoteError, Remotes

# the dead-man fires this long after the fault's planned end: time for a normal heal to get there first
DEFAULT_GRACE_S = 10.0
# a shell command on a host: seconds at most, even on a loaded 2-core machine
COMMAND_TIMEOUT_S = 30.0


@dataclass
class FaultSpec:
    kind: str
    group: str
    target: str
    for_s: float | None = None
    service: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    id: str = ""


@dataclass
class FaultContext:
    """What a fault needs from the runner: hosts, SSH, the run's clock and how to find a primary."""

    inventory: Inventory
    remotes: Remotes
    clock: Callable[[], float]
    rng: random.Random
    secrets_dir: Path
    primary_of: PrimaryOf | None = None
    grace_s: float = DEFAULT_GRACE_S


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def parallel(hosts: list[Host], action: Callable[[Host], Any]) -> dict[str, Any]:
    """action on every host at once; host name -> result, or the exception it raised."""
    def one(host: Host) -> tuple[str, Any]:
        try:
            return host.name, action(host)
        except (FaultError, RemoteError) as exc:
            return host.name, exc

    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        return dict(pool.map(one, hosts))


def raise_first(results: dict[str, Any], what: str) -> None:
    errors = [f"{value}" for value in results.values() if isinstance(value, Exception)]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise FaultError(f"{what}: {errors[0]}{more}")


class Fault:
    """Subclasses set `kind`, `needs_for`, and implement undo()/inject_on()/verify_on() (and check())."""

    kind = ""
    needs_for = True

    def __init__(self, spec: FaultSpec, ctx: FaultContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.id = deadman.check_id(spec.id or new_id(spec.kind))
        self.targets: list[Host] = []
        self.affected: list[Host] = []
        self.t_inject: float | None = None
        self.t_heal: float | None = None
        self.injected = False
        self.healed = False
        self.verified = False
        self.armed = False
        self.error: str | None = None
        self.timings: dict[str, float] = {}

    # ---- what a kind defines -------------------------------------------------------------------
    def check(self) -> None:
        """Validate params (FaultSpecError) before anything is touched."""

    def affected_hosts(self, targets: list[Host]) -> list[Host]:
        """Every host the fault changes (a partition also changes its peers)."""
        return targets

    def prepare(self) -> None:
        """Resolve what inject needs from the hosts (units, devices); FaultUnsupported here stops early."""

    def undo(self, host: Host) -> str | None:
        """The shell command that removes the fault from host (idempotent), or None when nothing is undone."""
        return None

    def inject_on(self, host: Host) -> None:
        raise NotImplementedError

    def verify_on(self, host: Host) -> None:
        """Raise FaultError when host is not back to normal."""

    def intent(self, host: Host) -> dict[str, Any]:
        return {"kind": self.kind, "group": self.spec.group, "target": self.spec.target}

    # ---- the life cycle ------------------------------------------------------------------------
    def remote(self, host: Host):
        return self.ctx.remotes(host)

    def run(self, host: Host, command: str, timeout: float = COMMAND_TIMEOUT_S, input_text: str | None = None) -> str:
        """stdout of a command that must succeed; FaultError (the host and the command's last line) otherwise."""
        try:
            return self.remote(host).check(command, timeout, input_text)
        except RemoteError as exc:
            raise FaultError(str(exc)) from None

    def inject(self) -> None:
        """Resolve the targets, arm the dead-man, inject; FaultSpecError / FaultUnsupported before anything
        is touched, FaultError (also kept in record()['error']) when a host refused."""
        try:
            self.check()
            self.targets = resolve(self.ctx.inventory, self.spec.group, self.spec.target, self.ctx.rng,
                                   self.ctx.primary_of, self.ctx.secrets_dir)
            self.affected = self.affected_hosts(self.targets)
            self.prepare()
        except FaultError as exc:
            self.error = str(exc)
            raise
        started = time.monotonic()
        try:
            raise_first(parallel(self.affected, self._arm), f"{self.kind} {self.id}: cannot arm the dead-man")
            self.timings["arm_s"] = time.monotonic() - started
            self.t_inject = self.ctx.clock()
            self.injected = True
            started = time.monotonic()
            raise_first(parallel(self.affected, self.inject_on), f"{self.kind} {self.id}: inject failed")
            self.timings["inject_s"] = time.monotonic() - started
        except FaultError as exc:
            self.error = str(exc)
            raise

    def _arm(self, host: Host) -> None:
        undo = self.undo(host)
        if undo is None:
            return
        if self.spec.for_s is not None:
            delay = self.spec.for_s + self.ctx.grace_s
            self.run(host, deadman.arm_command(self.id, delay, undo, self.intent(host)))
            self.armed = True
        else:
            self.run(host, deadman.record_command(self.id, undo, self.intent(host)))

    def _heal_on(self, host: Host) -> None:
        undo = self.undo(host)
        if undo is not None:
            self.run(host, deadman.heal_and_disarm(self.id, undo), timeout=self.heal_timeout())

    def heal_timeout(self) -> float:
        return COMMAND_TIMEOUT_S

    def heal(self) -> None:
        """Remove the fault from every affected host; FaultError naming the hosts where that failed."""
        if not self.injected or self.healed:
            return
        started = time.monotonic()
        try:
            raise_first(parallel(self.affected, self._heal_on), f"{self.kind} {self.id}: heal failed")
        except FaultError as exc:
            self.error = self.error or str(exc)
            raise
        self.t_heal = self.ctx.clock()
        self.healed = True
        self.timings["heal_s"] = time.monotonic() - started

    def verify(self) -> bool:
        """True when every affected host is back; the first reason otherwise goes to record()['error']."""
        if not self.injected:
            return False
        started = time.monotonic()
        try:
            raise_first(parallel(self.affected, self.verify_on), f"{self.kind} {self.id}: not recovered")
        except FaultError as exc:
            self.error = self.error or str(exc)
            self.verified = False
            return False
        self.verified = True
        self.timings["verify_s"] = time.monotonic() - started
        return True

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "target": self.spec.target,
                "hosts": [host.name for host in self.targets], "params": dict(self.spec.params),
                "t_inject": self.t_inject, "t_heal": self.t_heal, "healed": self.healed,
                "verified": self.verified, "deadman": deadman.unit_name(self.id) if self.armed else None,
                "error": self.error,
                # what the fault cost the runner: arm the dead-man, inject, heal, verify (seconds, SSH included)
                "timings": {k: round(v, 4) for k, v in self.timings.items()}}
