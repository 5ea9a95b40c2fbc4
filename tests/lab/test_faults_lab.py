"""Faults on lab hosts: each kind injected, healed and verified for real, the dead-man healing hosts whose runner
was killed with SIGKILL, and `kvtestbed heal` leaving nothing of ours behind.

Brings up a lab of its own (lab_name kvfx, 198.18.57.0/24, three emulated Pis with Redis + Sentinel), and
removes it at the end.

    .venv/bin/pytest -m lab tests/lab/test_faults_lab.py -s        # needs root
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvtestbed.faults import FaultUnsupported, heal_all, make_context, make_fault
from kvtestbed.faults.network import QDISC_HANDLE, TABLE
from kvtestbed.faults.targets import role_primary, sentinel_primary
from kvtestbed.inventory import Inventory
from kvtestbed.remote import Remote, Remotes
from tests.support.lab import ROOT, kvtestbed, lab_vars, run_playbook
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(1800)

LAB = "kvfx"
SUBNET = "198.18.57"
HOSTS = {"fl-1": f"{SUBNET}.11", "fl-2": f"{SUBNET}.12", "fl-3": f"{SUBNET}.13"}
# the dead-man of the SIGKILL tests: heal FOR_S + GRACE_S after inject
FOR_S, GRACE_S = 8, 3


def _inventory_text(secrets: Path) -> str:
    hosts = "\n".join(f"    {name}: {{ansible_host: {address}, lab_profile: pi4b}}" for name, address in HOSTS.items())
    return f"""---
all:
  hosts:
{hosts}
  children:
    redis:
      hosts: {{fl-1: , fl-2: , fl-3: }}
      vars:
        redis_kvstore: {{engine: redis, topology: replication, ports: [6379], primary: fl-1, persistence: none,
                        restart_sec: 2}}
    sentinel:
      hosts: {{fl-1: , fl-2: , fl-3: }}
      vars:
        sentinel_monitors: [{{name: redis, group: redis, port: 6379, primary: fl-1}}]
  vars:
{lab_vars(LAB, SUBNET)}
    testbed_secrets_dir: {secrets}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("kvfx")
    inventory = work / "hosts.yml"
    inventory.write_text(_inventory_text(work / "secrets"))
    try:
        started = time.monotonic()
        for playbook in ("playbooks/lab.yml", "playbooks/common.yml", "playbooks/redis.yml"):
            run_playbook(inventory, playbook)
        print(f"\nfaults lab up in {time.monotonic() - started:.0f} s")
        yield inventory
    finally:
        kvtestbed("heal", "--inventory", str(inventory), timeout=300)
        run_playbook(inventory, "playbooks/lab.yml", "-e", "lab_state=down", check=False, timeout=600)


@pytest.fixture(scope="module")
def inventory(lab):
    return Inventory.load(lab)


@pytest.fixture
def context(inventory):
    remotes = Remotes()
    yield make_context(inventory, remotes=remotes, seed=12, grace_s=GRACE_S)
    remotes.close()


def _sh(inventory: Inventory, host: str, command: str) -> str:
    with Remote(inventory.host(host), multiplex=False) as remote:
        return remote.run(command, timeout=60).stdout


def _main_state(inventory: Inventory, host: str, unit: str = "redis@6379.service") -> str:
    return _sh(inventory, host, f"awk '{{print $3}}' /proc/$(systemctl show -p MainPID --value {unit})/stat").strip()


def _reaches(inventory: Inventory, source: str, target: str, port: int = 22) -> bool:
    probe = f"timeout 1 bash -c '</dev/tcp/{HOSTS[target]}/{port}' 2>/dev/null && echo yes || echo no"
    return _sh(inventory, source, probe).strip() == "yes"


def _leftovers(inventory: Inventory) -> dict[str, list[str]]:
    """Anything of ours on any host: our nft table, a qdisc with our handle, a stopped process, a dead-man timer."""
    found: dict[str, list[str]] = {}
    for name in HOSTS:
        script = (f"nft list table inet {TABLE} >/dev/null 2>&1 && echo table; "
                  f"tc qdisc show | grep -q ' {QDISC_HANDLE} ' && echo qdisc; "
                  "ps -eo stat=,comm= | awk '$1 ~ /^T/ {print \"stopped \" $2}'; "
                  "systemctl list-units --all --plain --no-legend 'kvt-heal-*' | awk '{print \"timer \" $1}'; "
                  "ls /run/kvtestbed-faults 2>/dev/null | sed 's/^/intent /'")
        lines = [line for line in _sh(inventory, name, script).splitlines() if line.strip()]
        if lines:
            found[name] = lines
    return found


def test_primary_is_what_sentinel_and_role_say(inventory, context):
    assert sentinel_primary(inventory, "redis", context.secrets_dir) == role_primary(inventory, "redis",
                                                                                     context.secrets_dir)


def test_kill_brings_the_unit_back_with_a_new_pid(inventory, context):
    fault = make_fault({"kind": "kill", "group": "redis", "target": "replica"}, inventory, context)
    fault.inject()
    fault.heal()
    assert fault.verify(), fault.error
    record = fault.record()
    assert record["healed"] and record["verified"] and record["deadman"] is None
    print(f"\nkill: inject {fault.timings['inject_s']:.3f} s, back after {fault.timings['verify_s']:.2f} s")


def test_pause_stops_then_resumes_the_process(inventory, context):
    fault = make_fault({"kind": "pause", "group": "redis", "target": "fl-2", "for": 30}, inventory, context)
    fault.inject()
    try:
        assert _main_state(inventory, "fl-2") == "T"
    finally:
        fault.heal()
    assert fault.verify(), fault.error
    assert _main_state(inventory, "fl-2") in ("S", "R")
    assert fault.record()["deadman"] == f"kvt-heal-{fault.id}"


def test_isolate_cuts_the_target_from_its_peers_then_heals(inventory, context):
    assert _reaches(inventory, "fl-3", "fl-2")
    fault = make_fault({"kind": "partition", "group": "redis", "target": "fl-3", "for": 30}, inventory, context)
    fault.inject()
    try:
        assert not _reaches(inventory, "fl-3", "fl-2")
        assert not _reaches(inventory, "fl-1", "fl-3")
        assert _reaches(inventory, "fl-1", "fl-2"), "the rest of the group must still reach each other"
    finally:
        fault.heal()
    assert fault.verify(), fault.error
    assert _reaches(inventory, "fl-3", "fl-2") and _reaches(inventory, "fl-2", "fl-3")
    print(f"\npartition isolate: arm {fault.timings['arm_s']:.3f} s, inject {fault.timings['inject_s']:.3f} s, "
          f"heal {fault.timings['heal_s']:.3f} s")


def test_shape_puts_our_tbf_and_gives_the_labs_back(inventory, context):
    before = _sh(inventory, "fl-1", "tc qdisc show dev host0 root")
    fault = make_fault({"kind": "shape", "group": "redis", "target": "fl-1", "for": 30,
                        "params": {"rate": "10mbit", "burst": "64kb"}}, inventory, context)
    fault.inject()
    try:
        assert f"qdisc tbf {QDISC_HANDLE} root" in _sh(inventory, "fl-1", "tc qdisc show dev host0")
    finally:
        fault.heal()
    assert fault.verify(), fault.error
    after = _sh(inventory, "fl-1", "tc qdisc show dev host0 root")
    assert QDISC_HANDLE not in after
    assert after.split()[:3] == before.split()[:3]  # the lab's own tbf, same handle
    print(f"\nshape: inject {fault.timings['inject_s']:.3f} s, heal {fault.timings['heal_s']:.3f} s")


def test_netem_is_reported_unsupported_not_faked(inventory, context):
    fault = make_fault({"kind": "netem", "group": "redis", "target": "one", "for": 5,
                        "params": {"delay": "50ms"}}, inventory, context)
    with pytest.raises(FaultUnsupported) as caught:
        fault.inject()
    assert str(caught.value).startswith("netem: unsupported on this kernel (sch_netem missing")
    assert "\n" not in str(caught.value)
    assert not fault.injected


def test_clock_is_unsupported_in_the_lab(inventory, context):
    fault = make_fault({"kind": "clock", "group": "redis", "target": "one", "for": 5}, inventory, context)
    with pytest.raises(FaultUnsupported, match="unsupported in the lab"):
        fault.inject()


def test_reboot_restarts_the_container_and_ssh_answers(inventory, context):
    fault = make_fault({"kind": "reboot", "group": "redis", "target": "fl-3"}, inventory, context)
    fault.inject()
    fault.heal()
    assert fault.verify(), fault.error
    assert _sh(inventory, "fl-3", "systemctl is-active redis@6379.service").strip() == "active"
    print(f"\nreboot: down and up again in {fault.timings['inject_s']:.2f} s "
          f"(lab start {fault.timings['lab_start_s']:.2f} s)")


def _runner(inventory_path: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, KVTESTBED_HOME=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "kvtestbed.cli", "fault", *args, "--inventory", str(inventory_path),
                             "--for", str(FOR_S), "--grace", str(GRACE_S)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_hosts_heal_themselves_when_the_runner_is_killed(lab, inventory):
    partition = _runner(lab, "partition", "--group", "redis", "--target", "fl-1", "--id", "sigkill-partition")
    pause = _runner(lab, "pause", "--group", "redis", "--target", "fl-2", "--id", "sigkill-pause")
    try:
        wait_until(lambda: not _reaches(inventory, "fl-1", "fl-3"), 30, what="the partition to take")
        wait_until(lambda: _main_state(inventory, "fl-2") == "T", 30, what="the pause to take")
        injected = time.monotonic()
        # still holding the faults: what heals them now is not the runner
        assert partition.poll() is None and pause.poll() is None
    finally:
        for child in (partition, pause):
            child.send_signal(signal.SIGKILL)
            child.wait(10)
    assert partition.returncode == pause.returncode == -signal.SIGKILL
    deadline = FOR_S + GRACE_S + 5  # the dead-man's time, plus polling and a loaded machine
    wait_until(lambda: _reaches(inventory, "fl-1", "fl-3"), deadline, what="the partition to heal by itself")
    wait_until(lambda: _main_state(inventory, "fl-2") in ("S", "R"), deadline, what="the pause to heal by itself")
    print(f"\nSIGKILLed runners: hosts healed by themselves {time.monotonic() - injected:.1f} s after inject "
          f"(dead-man {FOR_S}+{GRACE_S} s)")
    wait_until(lambda: not _leftovers(inventory), 10, what="no dead-man timer or intent left after it fired")


def test_kvtestbed_heal_leaves_nothing_of_ours(lab, inventory, context):
    # faults whose runner went away without healing (long dead-man, so only heal can undo them now)
    for entry in ({"kind": "pause", "group": "redis", "target": "fl-3", "for": 600},
                  {"kind": "stop", "group": "sentinel", "target": "fl-3", "for": 600, "service": "sentinel"},
                  {"kind": "partition", "group": "redis", "target": "fl-1", "for": 600,
                   "params": {"shape": "halves"}},
                  {"kind": "shape", "group": "redis", "target": "fl-2", "for": 600, "params": {"rate": "50mbit"}}):
        make_fault(entry, inventory, context).inject()
    assert set(_leftovers(inventory)) == set(HOSTS)
    proc = kvtestbed("heal", "--inventory", str(lab), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "fl-3: healed pause" in proc.stdout and "fl-3: healed stop" in proc.stdout
    assert _leftovers(inventory) == {}
    assert _sh(inventory, "fl-3", "systemctl is-active redis-sentinel@26379.service").strip() == "active"
    again = kvtestbed("heal", "--inventory", str(lab), timeout=300)
    assert again.returncode == 0 and "nothing to heal" in again.stdout
    assert heal_all(inventory) == []
