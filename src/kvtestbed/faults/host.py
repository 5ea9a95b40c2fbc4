"""Host faults: reboot, and a clock step.

Reboot. A real host reboots with `systemctl reboot` (from a one-second timer, so the SSH call returns first) and
is back when SSH answers with a new boot id. A lab host is a systemd-nspawn container: `systemctl reboot` inside
it ends the container (systemd-nspawn exits on a reboot request, and the lab runs it without a supervisor that
would restart it), so the fault waits for the container to end and starts it again through the lab runtime
(kvtestbed.lab.hosts, as `kvtestbed lab up` does), then waits for SSH. A runner that dies in between leaves the
container down: `kvtestbed heal` starts it again.

Clock. A lab host shares the controller's kernel clock, so stepping it would step the controller: unsupported
there. On a real host chrony is stopped, the clock stepped with `date -s`; heal starts chrony and steps back.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from kvtestbed.faults.base import Fault
from kvtestbed.faults.errors import FaultError, FaultSpecError, FaultUnsupported
from kvtestbed.inventory import Host
from kvtestbed.remote import RemoteError

LAB_STATE_DIR = "/var/lib/kvtestbed/lab"
DOWN_TIMEOUT_S = 90.0
UP_TIMEOUT_S = 180.0
POLL_S = 0.25
CLOCK_TOLERANCE_S = 1.0
_STEP = re.compile(r"^([+-])(\d+(?:\.\d+)?)(s|m|h)?$")


def lab_host_handle(host: Host):
    """The lab runtime's Host object for an emulated host, from the lab's status.json and the host's state."""
    from kvtestbed.lab.hosts import Host as LabHost
    from kvtestbed.lab.hosts import HostSpec, Lab

    lab_dir = Path(str(host.vars.get("lab_state_dir", LAB_STATE_DIR))) / str(host.vars.get("lab_name", "default"))
    try:
        status = json.loads((lab_dir / "status.json").read_text())
        state = json.loads((lab_dir / "hosts" / host.name / "host.json").read_text())
        pubkey = Path(str(status["ssh_key"]) + ".pub").read_text().strip()
    except (OSError, ValueError, KeyError) as exc:
        raise FaultError(f"host {host.name}: no lab state in {lab_dir} ({exc}); is the lab up?") from None
    spec = next((entry for entry in status.get("hosts", []) if entry.get("name") == host.name), None)
    if spec is None:
        raise FaultError(f"host {host.name}: not in the lab's status {lab_dir / 'status.json'}")
    lab = Lab(hosts_dir=str(lab_dir / "hosts"), prefix=int(str(status["subnet"]).split("/")[1]),
              gateway=status["gateway"], bridge=status["bridge"], image=status["image"],
              image_id=state.get("image_id", ""), ssh_pubkey=pubkey, runtime=state.get("runtime", "auto"))
    return LabHost(lab, HostSpec.from_dict(spec))


def start_lab_host(host: Host) -> dict[str, Any]:
    """Start a stopped lab container (a no-op when it runs): what the lab's own `up` does for one host."""
    from kvtestbed.lab.hosts import ensure_running
    from kvtestbed.lab.runtime import LabError

    if os.geteuid() != 0:
        raise FaultError(f"host {host.name}: starting a lab container needs root on the controller")
    try:
        _, state = ensure_running(lab_host_handle(host))
    except (LabError, OSError) as exc:
        raise FaultError(f"host {host.name}: the lab could not start it again ({exc})") from None
    return state


class RebootFault(Fault):
    kind = "reboot"
    needs_for = False

    def check(self) -> None:
        if self.spec.params:
            raise FaultSpecError(f"reboot: takes no params (got {', '.join(sorted(self.spec.params))})")

    def prepare(self) -> None:
        self.before: dict[str, str] = {}
        for host in self.targets:
            if host.in_lab:
                if os.geteuid() != 0:
                    raise FaultError(f"reboot of lab host {host.name} needs root on the controller")
                self.before[host.name] = str(lab_host_handle(host).pid())
            else:
                self.before[host.name] = self.run(host, "cat /proc/sys/kernel/random/boot_id").strip()

    def inject_on(self, host: Host) -> None:
        # from a timer, so that this SSH call returns before sshd goes down
        self.run(host, "systemd-run --quiet --on-active=1s --timer-property=AccuracySec=100ms systemctl reboot")
        if host.in_lab:
            self._lab_restart(host)

    def _lab_restart(self, host: Host) -> None:
        lab_host = lab_host_handle(host)
        deadline = time.monotonic() + DOWN_TIMEOUT_S
        while lab_host.running() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        if lab_host.running():
            raise FaultError(f"host {host.name}: the container did not end within {DOWN_TIMEOUT_S:g} s of "
                             "systemctl reboot")
        started = time.monotonic()
        self.remote(host).drop_master()
        start_lab_host(host)
        self.timings["lab_start_s"] = time.monotonic() - started

    def verify_on(self, host: Host) -> None:
        remote = self.remote(host)
        remote.drop_master()
        deadline = time.monotonic() + UP_TIMEOUT_S
        while time.monotonic() < deadline:
            if host.in_lab:
                changed = str(lab_host_handle(host).pid()) not in ("0", self.before[host.name])
                if changed and remote.answers(timeout=10):
                    return
            else:
                try:
                    boot_id = remote.run("cat /proc/sys/kernel/random/boot_id", timeout=10).stdout.strip()
                    if boot_id and boot_id != self.before[host.name]:
                        return
                except RemoteError:
                    remote.drop_master()
            time.sleep(POLL_S)
        raise FaultError(f"host {host.name}: did not come back with SSH within {UP_TIMEOUT_S:g} s of the reboot")


def step_seconds(step: str) -> float:
    match = _STEP.match(str(step).strip())
    if not match:
        raise FaultSpecError(f"clock: params.step {step!r} is not like +30s, -5s or +2m")
    sign, number, unit = match.groups()
    seconds = float(number) * {"s": 1, "m": 60, "h": 3600}[unit or "s"]
    return seconds if sign == "+" else -seconds


class ClockFault(Fault):
    kind = "clock"

    def check(self) -> None:
        unknown = set(self.spec.params) - {"step"}
        if unknown:
            raise FaultSpecError(f"clock: unknown params {', '.join(sorted(unknown))} (step)")
        self.step = step_seconds(self.spec.params.get("step", "+30s"))

    def prepare(self) -> None:
        lab = [host.name for host in self.targets if host.in_lab]
        if lab:
            raise FaultUnsupported(f"clock: unsupported in the lab ({', '.join(lab)}: lab hosts share the "
                                   "controller's kernel clock, a step there would step the controller too)")

    def undo(self, host: Host) -> str:
        # chrony's Debian config steps a large offset in its first updates; makestep forces it once synced
        return ("systemctl start chrony && { chronyc waitsync 20 0.5 0 1 >/dev/null 2>&1; chronyc makestep "
                ">/dev/null; }")

    def inject_on(self, host: Host) -> None:
        # python3 is on every host Ansible manages; date alone cannot add fractions of seconds
        self.run(host, "systemctl stop chrony && date -s @$(python3 -c 'import time; print(time.time() + "
                       f"{self.step!r})') >/dev/null")

    def verify_on(self, host: Host) -> None:
        deadline = time.monotonic() + 60
        offset = float("nan")
        while time.monotonic() < deadline:
            sent = time.time()
            remote_now = float(self.run(host, "date +%s.%N").strip())
            offset = remote_now - (sent + time.time()) / 2
            if abs(offset) < CLOCK_TOLERANCE_S:
                return
            time.sleep(POLL_S)
        raise FaultError(f"host {host.name}: clock still {offset:+.1f} s off the controller's after heal")
