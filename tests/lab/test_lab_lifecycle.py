"""The lab end to end: up, a second up that changes nothing, status, survival of a killed session, and a down
that leaves no bridge, nft table, nspawn process, mount or cgroup behind, and forwarding as the machine's
labs need it.

Every test stands alone: the module brings its lab up once (the slow part), a test that takes it down says
so, and the next test that needs it brings it back up."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvtestbed.lab import forwarding
from tests.support.lab import kvtestbed, write_lab_inventory

NAME = "lifecycle"
BRIDGE = "kvtb-lifecycle"
STATE = Path("/var/lib/kvtestbed/lab") / NAME
HOSTS = {"lpi-1": "pi4b", "lpc-1": "pc"}
# a second lab, one host: forwarding is shared while both are up
OTHER, OTHER_HOSTS = "lcother", {"lco-1": "pi4b"}
LABS_DIR = "/var/lib/kvtestbed/lab"
FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def lab_cgroups(host: str, root: str = "/sys/fs/cgroup") -> list[str]:
    """Every cgroup named kvtestbed-lab/<host>, in any hierarchy and at any depth.

    os.walk, not Path.glob: a booted container's systemd creates and removes unit groups while we look,
    and glob raises on a directory that vanishes under it where os.walk skips it."""
    found = []
    for top, names, _ in os.walk(root):
        if top.endswith("/kvtestbed-lab") and host in names:
            found.append(os.path.join(top, host))
            names.remove(host)  # nothing of interest below a host's group
    return sorted(found)


def traces() -> dict[str, object]:
    """Everything of this lab visible on the controller."""
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    procs = subprocess.run(["pgrep", "-af", "systemd-nspawn|chronyd"], capture_output=True, text=True).stdout
    mounts = Path("/proc/self/mountinfo").read_text()
    cgroups = lab_cgroups("lpi-1")
    return {
        "bridge": Path(f"/sys/class/net/{BRIDGE}").exists(),
        "nft": f"table ip kvtestbed_{NAME}" in nft.splitlines(),
        "processes": [line for line in procs.splitlines() if f"{STATE}/" in line],
        "mounts": [line for line in mounts.splitlines() if f"{STATE}/" in line],
        "cgroups": cgroups,
        "state_dir": STATE.exists(),
    }


def ssh(address: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-i", str(STATE / "ssh/id_ed25519"), "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "LogLevel=ERROR", f"root@{address}", command],
                          capture_output=True, text=True, timeout=60)


def original_forwarding() -> str:
    """What ip_forward was before any lab of this machine held it: the record says, or the switch itself."""
    record = forwarding.load(LABS_DIR)
    return record.before if record else FORWARD.read_text().strip()


@dataclass
class Lab:
    inventory: Path
    forwarding_before: str  # before this module's first up
    up: bool = False  # known to be up; False also while a test may have left it half up or down
    down: bool = True  # known to be down (nothing for the module's teardown to remove)

    def ensure_up(self) -> None:
        if not self.up:
            self.down = False  # from here on, something of it may exist
            started = time.monotonic()
            proc = kvtestbed("lab", "up", "--inventory", str(self.inventory))
            assert proc.returncode == 0, proc.stderr + proc.stdout
            print(f"lab up: {time.monotonic() - started:.1f} s")
            self.up = True


@pytest.fixture(scope="module")
def the_lab(tmp_path_factory):
    state = Lab(write_lab_inventory(tmp_path_factory.mktemp("inv"), NAME, 51, HOSTS), original_forwarding())
    try:
        yield state
    finally:
        if not state.down:
            kvtestbed("lab", "down", "--inventory", str(state.inventory))


@pytest.fixture
def lab(the_lab) -> Path:
    """The module's lab, up (brought up again if a test before took it down)."""
    the_lab.ensure_up()
    return the_lab.inventory


def test_up_boots_every_host(lab):
    for index, host in enumerate(HOSTS, start=11):
        result = ssh(f"198.18.51.{index}", "hostname; systemctl is-system-running --wait; systemctl --failed "
                                            "--no-legend")
        lines = result.stdout.split()
        assert lines[0] == host
        assert lines[1] in ("running", "degraded"), result.stdout
        if lines[1] == "degraded":
            pytest.fail(f"{host} degraded, failed units: {result.stdout}")


def test_profiles_limit_memory_and_cpu(lab):
    # the pi4b profile caps memory at 4096 MB and CPU at one controller core
    result = ssh("198.18.51.11", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
                                 "|| cat /sys/fs/cgroup/memory.max")
    assert int(result.stdout.split()[0]) == 4096 * 1024 * 1024
    tc = subprocess.run(["tc", "qdisc", "show", "dev", "vb-lpi-1"], capture_output=True, text=True).stdout
    assert "tbf" in tc and "rate 1Gbit" in tc


def test_second_up_changes_nothing(lab):
    started = time.monotonic()
    proc = kvtestbed("lab", "up", "--inventory", str(lab))
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "localhost  ok=" in proc.stdout and " changed=0 " in proc.stdout, proc.stdout
    print(f"second up: {elapsed:.1f} s")


def test_status_table(lab):
    proc = kvtestbed("lab", "status", "--inventory", str(lab))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.startswith(("lpi", "lpc"))}
    assert rows["lpi-1"][1:5] == ["pi4b", "198.18.51.11", "running", "ok"]
    assert rows["lpc-1"][1:5] == ["pc", "198.18.51.12", "running", "ok"]
    # what the kernel cannot emulate is said, never faked
    assert "not emulated: netem delay/loss" in proc.stdout or "netem" not in proc.stdout


def test_up_takes_over_a_killed_session(lab, the_lab):
    """A session that stops kills the processes and leaves bridge, nft table, mounts and files."""
    the_lab.up = False  # until this test's own up succeeds
    for line in traces()["processes"]:
        os.kill(int(line.split()[0]), signal.SIGKILL)
    deadline = time.monotonic() + 5  # SIGKILLed processes vanish once reaped; give a loaded machine time
    while traces()["processes"] and time.monotonic() < deadline:
        time.sleep(0.2)
    left = traces()
    assert left["bridge"] and left["mounts"], left
    assert not left["processes"], left["processes"]
    down = kvtestbed("lab", "status", "--inventory", str(lab))
    assert "stopped" in down.stdout and down.returncode == 1
    proc = kvtestbed("lab", "up", "--inventory", str(lab))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    the_lab.up = True
    result = ssh("198.18.51.12", "systemctl is-system-running --wait; systemctl --failed --no-legend; "
                                 "journalctl -b -p warning --no-pager | tail -n 30")
    assert result.stdout.split()[0] == "running", result.stdout


def test_down_leaves_nothing_and_forwarding_as_other_labs_need_it(lab, the_lab, tmp_path):
    """Forwarding is the machine's: down keeps it on while another lab is up, the last lab out restores it."""
    other = write_lab_inventory(tmp_path / "other", OTHER, 52, OTHER_HOSTS)
    try:
        up = kvtestbed("lab", "up", "--inventory", str(other))
        assert up.returncode == 0, up.stderr + up.stdout
        proc = kvtestbed("lab", "down", "--inventory", str(lab))
        the_lab.up = False
        assert proc.returncode == 0, proc.stderr
        the_lab.down = True
        assert traces() == {"bridge": False, "nft": False, "processes": [], "mounts": [], "cgroups": [],
                            "state_dir": False}
        assert FORWARD.read_text().strip() == "1", "down turned forwarding off under another lab"
        again = kvtestbed("lab", "down", "--inventory", str(lab))
        assert again.returncode == 0 and " changed=0 " in again.stdout
    finally:
        last = kvtestbed("lab", "down", "--inventory", str(other))
    assert last.returncode == 0, last.stderr
    if forwarding.load(LABS_DIR) is None:  # ours were the last labs: the machine's own value is back
        assert FORWARD.read_text().strip() == the_lab.forwarding_before
    else:  # a lab of someone else's (CI runs several side by side) still holds it
        assert FORWARD.read_text().strip() == "1"
