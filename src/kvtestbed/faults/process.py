"""Process faults on systemd units: kill (a signal, SIGKILL by default), stop/start, pause (SIGSTOP/SIGCONT).

Signals go through `systemctl kill`, which reaches every process of the unit's cgroup, so a forking server is
hit whole. A killed unit comes back by its own Restart= policy: verify waits for it within its RestartSec plus
a bound, and checks that the main PID changed (a unit that never died is not a recovery).
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from kvtestbed.faults.base import Fault
from kvtestbed.faults.errors import FaultError, FaultSpecError
from kvtestbed.inventory import Host, Inventory

# a unit that restarts takes its RestartSec, then this long at most to be active again
RESTART_BOUND_S = 30.0
POLL_S = 0.25
SIGNALS = ("KILL", "TERM", "INT", "QUIT", "ABRT", "SEGV", "HUP")


def units_for(inventory: Inventory, group: str, service: str | None, host: Host) -> list[str]:
    """The systemd units `service` names on host (see the fault entry's `service` in the scenario format)."""
    settings = host.vars.get(f"{group}_kvstore")
    if service is None:
        service = "kv" if isinstance(settings, dict) else "nats" if group == "nats" else None
        if service is None:
            raise FaultSpecError(f"group {group}: say which service (kv, sentinel, nats, agent:<name> or a unit)")
    if service == "kv":
        if not isinstance(settings, dict):
            raise FaultSpecError(f"service kv: group {group} has no {group}_kvstore (not a key-value group)")
        engine = settings.get("engine", "redis")
        return [f"{engine}@{int(port)}.service" for port in settings.get("ports", [6379])]
    if service == "sentinel":
        engine = host.vars.get("sentinel_engine", "redis")
        return [f"{engine}-sentinel@{int(host.vars.get('sentinel_port', 26379))}.service"]
    if service == "nats":
        return ["nats-server.service"]
    if service.startswith("agent:"):
        return [f"kvtestbed-agent@{service.removeprefix('agent:')}.service"]
    if not service or any(ch in service for ch in " ;'\"$`\\/"):
        raise FaultSpecError(f"service {service!r}: not a unit name")
    return [service if "." in service else f"{service}.service"]


def unit_states(fault: Fault, host: Host, units: list[str]) -> dict[str, dict[str, str]]:
    """unit -> {active, pid, restart (RestartUSec), state (the main process's /proc state letter, '-' if none)}."""
    script = "; ".join(
        f"echo '== {unit}'; systemctl show -p ActiveState -p MainPID -p RestartUSec {shlex.quote(unit)}; "
        f"p=$(systemctl show -p MainPID --value {shlex.quote(unit)}); "
        "st=$(awk '{print $3}' /proc/$p/stat 2>/dev/null); echo \"State=${st:--}\""
        for unit in units)
    names = {"ActiveState": "active", "MainPID": "pid", "RestartUSec": "restart", "State": "state"}
    states: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in fault.run(host, script).splitlines():
        if line.startswith("== "):
            current = states.setdefault(line[3:].strip(), {})
        elif "=" in line:
            key, _, value = line.partition("=")
            if key in names:
                current[names[key]] = value.strip()
    return states


def _seconds(systemd_time: str) -> float:
    """RestartUSec as `systemctl show` prints it: 100ms, 2s, 1min 30s."""
    total = 0.0
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
    for word in systemd_time.replace("min", "min ").split():
        number = word.rstrip("abcdefghijklmnopqrstuvwxyz")
        suffix = word[len(number):] or "s"
        try:
            total += float(number) * units.get(suffix, 1.0)
        except ValueError:
            continue
    return total


class ProcessFault(Fault):
    def check(self) -> None:
        self.units: dict[str, list[str]] = {}

    def prepare(self) -> None:
        for host in self.targets:
            self.units[host.name] = units_for(self.ctx.inventory, self.spec.group, self.spec.service, host)
        self.before = {host.name: unit_states(self, host, self.units[host.name]) for host in self.targets}
        for host in self.targets:
            for unit, state in self.before[host.name].items():
                if state["active"] not in ("active", "reloading"):
                    raise FaultError(f"{self.kind}: {unit} on {host.name} is {state['active']}, not active: "
                                     "nothing to fault")

    def _units(self, host: Host) -> str:
        return " ".join(shlex.quote(unit) for unit in self.units[host.name])

    def intent(self, host: Host) -> dict[str, Any]:
        return dict(super().intent(host), units=self.units[host.name])

    def _wait(self, host: Host, healthy, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, dict[str, str]] = {}
        while True:
            states = unit_states(self, host, self.units[host.name])
            if all(healthy(unit, states.get(unit, {})) for unit in self.units[host.name]):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
        summary = ", ".join(f"{unit} {state.get('active', '?')} pid {state.get('pid', '?')} "
                            f"state {state.get('state', '?')}" for unit, state in states.items())
        raise FaultError(f"host {host.name}: {what} within {timeout:g} s ({summary})")


class KillFault(ProcessFault):
    kind = "kill"
    needs_for = False

    def check(self) -> None:
        super().check()
        signal = str(self.spec.params.get("signal", "KILL")).upper().removeprefix("SIG")
        if signal not in SIGNALS:
            raise FaultSpecError(f"kill: params.signal {signal!r} is not one of {', '.join(SIGNALS)}")
        self.signal = signal

    def inject_on(self, host: Host) -> None:
        self.run(host, f"systemctl kill --signal={self.signal} {self._units(host)}")

    def verify_on(self, host: Host) -> None:
        before = self.before[host.name]
        bound = max(_seconds(state["restart"]) for state in before.values()) + RESTART_BOUND_S

        def restarted(unit: str, state: dict[str, str]) -> bool:
            return state.get("active") == "active" and state.get("pid") not in ("0", before[unit]["pid"])

        self._wait(host, restarted, bound, "the unit did not come back active with a new main PID")


class StopFault(ProcessFault):
    kind = "stop"

    def undo(self, host: Host) -> str:
        return f"systemctl start {self._units(host)}"

    def inject_on(self, host: Host) -> None:
        self.run(host, f"systemctl stop {self._units(host)}", timeout=120)

    def heal_timeout(self) -> float:
        return 120.0

    def verify_on(self, host: Host) -> None:
        self._wait(host, lambda unit, state: state.get("active") == "active", RESTART_BOUND_S, "not active again")


class PauseFault(ProcessFault):
    kind = "pause"

    def undo(self, host: Host) -> str:
        return f"systemctl kill --signal=CONT {self._units(host)}"

    def inject_on(self, host: Host) -> None:
        self.run(host, f"systemctl kill --signal=STOP {self._units(host)}")
        # SIGSTOP is delivered asynchronously: wait (briefly) until the main process shows it
        self._wait(host, lambda unit, state: state.get("state") == "T", 5.0, "the main process did not stop")

    def verify_on(self, host: Host) -> None:
        self._wait(host, lambda unit, state: state.get("active") == "active" and state.get("state") not in ("T", "-"),
                   RESTART_BOUND_S, "the main process is not running again")
