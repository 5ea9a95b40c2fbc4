"""NATS on lab hosts: an R3 stream keeps taking publishes with one of three servers down; bad input fails preflight.

The lab test brings up a lab of its own (lab_name nats3, 198.18.23.0/24), converges playbooks/common.yml and
playbooks/nats.yml on it, and removes it afterwards. It measures how long publishes were refused while the
stream leader was stopped (lame-duck stop) and while it was SIGKILLed, and writes the figures to
results/nats_r3_availability.json.

    .venv/bin/pytest -m lab tests/lab/test_nats_cluster.py -s          # needs root
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.binaries import unavailable
from tests.support.lab import lab_vars, run_playbook, ssh

ROOT = Path(__file__).resolve().parents[2]
LAB = "nats3"
SUBNET = "198.18.23"
SERVERS = {"nl-1": f"{SUBNET}.21", "nl-2": f"{SUBNET}.22", "nl-3": f"{SUBNET}.13"}
KEY = f"/var/lib/kvtestbed/lab/{LAB}/ssh/id_ed25519"

INVENTORY = f"""---
all:
  hosts:
    nl-1: {{ansible_host: {SERVERS["nl-1"]}, lab_profile: pc}}
    nl-2: {{ansible_host: {SERVERS["nl-2"]}, lab_profile: pc}}
    nl-3: {{ansible_host: {SERVERS["nl-3"]}, lab_profile: pi4b}}
  children:
    nats:
      hosts:
        nl-1:
        nl-2:
        nl-3:
    # too small for clustered JetStream: preflight must refuse it
    pair:
      hosts:
        nl-1:
        nl-2:
  vars:
{lab_vars(LAB, SUBNET)}
    nats_install_method: pypi
    nats_cluster_group: nats
"""


def _playbook(inventory: Path, playbook: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_playbook(inventory, playbook, *extra, check=check, timeout=900)


def _ssh(address: str, command: str) -> subprocess.CompletedProcess:
    return ssh(address, KEY, command)


# --- the lab: R3 availability with one server stopped -------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        unavailable("the lab needs root")
    workdir = tmp_path_factory.mktemp("nats-lab")
    inventory = workdir / "hosts.yml"
    secrets = workdir / "secrets"
    inventory.write_text(INVENTORY + f"    testbed_secrets_dir: {secrets}\n")
    try:
        _playbook(inventory, "playbooks/lab.yml")
        _playbook(inventory, "playbooks/common.yml")
        _playbook(inventory, "playbooks/nats.yml")
        yield {"inventory": inventory, "password": (secrets / "nats_app").read_text().strip()}
    finally:
        _playbook(inventory, "playbooks/lab.yml", "-e", "lab_state=down", check=False)


@dataclass
class Publisher:
    """Publishes one message every `interval` seconds and records (monotonic time, ok, error) per attempt."""

    js: object
    subject: str
    interval: float = 0.05
    timeout: float = 1.0
    log: list[tuple[float, bool, str]] = field(default_factory=list)
    acked: int = 0
    _stop: bool = False

    async def run(self) -> None:
        n = 0
        while not self._stop:
            n += 1
            started = time.monotonic()
            try:
                await self.js.publish(self.subject, str(n).encode(), timeout=self.timeout)
                self.acked += 1
                self.log.append((started, True, ""))
            except Exception as err:  # noqa: BLE001 - every refusal is recorded, whatever its kind
                self.log.append((started, False, type(err).__name__))
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop = True

    def window(self, since: float, until: float) -> dict:
        attempts = [entry for entry in self.log if since <= entry[0] < until]
        failed = [entry for entry in attempts if not entry[1]]
        refused_s = (failed[-1][0] - failed[0][0] + self.timeout) if failed else 0.0
        return {"attempts": len(attempts), "acked": len(attempts) - len(failed), "refused": len(failed),
                "refused_window_s": round(refused_s, 2),
                "errors": sorted({entry[2] for entry in failed})}


async def _stream_leader(js, stream: str) -> str:
    for _ in range(60):
        try:
            info = await js.stream_info(stream)
            if info.cluster and info.cluster.leader:
                return info.cluster.leader
        except Exception:  # noqa: BLE001 - no leader yet
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"stream {stream} has no leader")


async def _wait_healthy(address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = await asyncio.to_thread(_ssh, address, f"python3 -c \"import urllib.request as u; "
                                                      f"print(u.urlopen('http://{address}:8222/healthz').status)\"")
        if proc.stdout.strip() == "200":
            return
        await asyncio.sleep(1)
    raise AssertionError(f"{address} not healthy")


async def _outage(js, pub: Publisher, how: str, steady: float = 5.0) -> dict:
    """Take the stream leader's server down (`stop`: lame duck, `kill`: SIGKILL), keep publishing, bring it back.

    Figures: how long the stop command took, when a new stream leader answered, the refused publishes from the
    stop to the restart, and a steady window with one server down that must have no refusal at all.
    """
    leader = await _stream_leader(js, "AVAIL")
    address = SERVERS[leader]
    t0 = time.monotonic()
    if how == "stop":
        stopping = asyncio.create_task(asyncio.to_thread(_ssh, address, "systemctl stop nats-server"))
    else:
        # SIGKILL the process, then keep systemd (Restart=on-failure) from restarting it during the measurement
        stopping = asyncio.create_task(asyncio.to_thread(
            _ssh, address, "systemctl kill --signal=SIGKILL nats-server; sleep 0.2; systemctl stop nats-server"))
    new_leader = leader
    while new_leader == leader and time.monotonic() - t0 < 60:
        await asyncio.sleep(0.25)
        new_leader = await _stream_leader(js, "AVAIL")
    t_leader = time.monotonic()
    proc = await stopping
    assert proc.returncode == 0, proc.stderr
    t_down = time.monotonic()
    # one server down, a leader elected: every publish must be acked by the two remaining servers
    await asyncio.sleep(1.0 + steady)
    steady_window = pub.window(max(t_leader, t_down) + 1.0, time.monotonic())
    down_end = time.monotonic()
    await asyncio.to_thread(_ssh, address, "systemctl start nats-server")
    await _wait_healthy(address)
    await asyncio.sleep(3)
    t_end = time.monotonic()
    outage = pub.window(t0, down_end)
    first_ok_after = next((e[0] for e in pub.log if e[0] >= t0 and e[1]
                           and not any(not f[1] for f in pub.log if e[0] < f[0] < down_end)), None)
    figures = {
        "how": how, "server": leader, "new_leader": new_leader,
        "stop_command_s": round(t_down - t0, 2),
        "new_stream_leader_after_s": round(t_leader - t0, 2),
        "publishes_ok_for_good_after_s": round(first_ok_after - t0, 2) if first_ok_after else None,
        "from_stop_to_restart": outage,
        "steady_with_one_down": steady_window,
        "restart_and_rejoin": pub.window(down_end, t_end),
    }
    print(json.dumps(figures))
    assert new_leader != leader, figures
    assert steady_window["attempts"] > 0 and steady_window["refused"] == 0, figures
    return figures


@pytest.mark.lab
def test_r3_stream_keeps_accepting_publishes_with_one_server_down(lab) -> None:
    import nats
    from nats.js.api import StorageType, StreamConfig

    async def scenario() -> dict:
        nc = await nats.connect([f"nats://{a}:4222" for a in SERVERS.values()], user="app", password=lab["password"],
                                max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="AVAIL", subjects=["avail.>"], num_replicas=3,
                                         storage=StorageType.FILE))
        pub = Publisher(js, "avail.x")
        task = asyncio.create_task(pub.run())
        await asyncio.sleep(3)
        baseline = pub.window(0, time.monotonic())
        stop = await _outage(js, pub, "stop")
        kill = await _outage(js, pub, "kill")
        pub.stop()
        await task
        info = await js.stream_info("AVAIL")
        await nc.close()
        return {"baseline": baseline, "lame_duck_stop": stop, "sigkill": kill,
                "total_attempts": len(pub.log), "acked": pub.acked, "stream_messages": info.state.messages,
                "replicas": [r.name for r in info.cluster.replicas or []], "leader": info.cluster.leader}

    figures = asyncio.run(scenario())
    results = ROOT / "results"
    results.mkdir(exist_ok=True)
    (results / "nats_r3_availability.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    assert figures["baseline"]["refused"] == 0
    # every acknowledged publish is in the stream (timed-out ones may be there too: no dedup ids here)
    assert figures["stream_messages"] >= figures["acked"]
    assert len(figures["replicas"]) == 2


# --- bad input: preflight (read-only, tagged nats_preflight) fails with one line naming the variable ---------


@pytest.mark.lab
@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"nats_install_method": "snap"}, "nats_install_method"),
        ({"nats_cluster_group": "pair"}, "nats_cluster_group"),
        ({"nats_cluster_group": "nope"}, "nats_cluster_group"),
        ({"nats_install_method": "apt", "nats_jetstream_sync_interval": "always"}, "nats_jetstream_sync_interval"),
        ({"nats_jetstream_sync_interval": "sometimes"}, "nats_jetstream_sync_interval"),
        ({"nats_pypi_version": "2.10.0"}, "nats_pypi_checksums"),
        ({"nats_install_method": "archive", "nats_archive_version": "9.9.9"}, "nats_archive_checksums"),
        ({"nats_lame_duck_duration": "2m"}, "nats_stop_timeout_sec"),
        ({"nats_tls_cert_file": "/nonexistent/server.pem", "nats_tls_key_file": "/nonexistent/server.key"},
         "nats_tls_cert_file"),
    ],
    ids=["method", "small-group", "no-group", "sync-on-2.9", "sync-bad", "pypi-sum", "archive-sum", "ldm", "tls"],
)
def test_preflight_rejects_bad_input(lab, extra: dict, variable: str) -> None:
    proc = _playbook(lab["inventory"], "playbooks/nats.yml", "--tags", "nats_preflight", "--limit", "nl-1",
                     "-e", json.dumps(extra), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    failures = [line for line in out.splitlines() if "msg" in line and variable in line]
    assert failures, f"no failure line naming {variable}:\n{out[-3000:]}"
