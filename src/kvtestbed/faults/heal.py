"""`kvtestbed heal`: undo whatever any runner left on the hosts, whether or not it is still alive.

Per host, in order: the heal command of every intent record in /run/kvtestbed-faults (SIGCONT for paused units,
start for stopped ones, our chains, our qdiscs), then a sweep for what has no record: our nft table, any qdisc
with our handle, our kvt-heal-* timers. Every step is idempotent; a host that does not answer is reported, and
a lab host whose container is down (a reboot fault whose runner died) is started again.
"""

from __future__ import annotations

import json
import re
import shlex

from kvtestbed.faults.base import COMMAND_TIMEOUT_S, parallel
from kvtestbed.faults.deadman import INTENT_DIR, UNIT_PREFIX
from kvtestbed.faults.errors import FaultError
from kvtestbed.faults.network import QDISC_HANDLE, TABLE
from kvtestbed.inventory import Host, Inventory
from kvtestbed.remote import Remote, RemoteError, Remotes, is_local

_READ_INTENTS = f"for f in {INTENT_DIR}/*.json; do [ -e \"$f\" ] && {{ cat \"$f\"; echo; }}; done; true"
# faults only ever make ours the root (see network.py); deleting it brings the kernel default back
_OUR_QDISC = re.compile(rf"^qdisc \S+ {QDISC_HANDLE} dev (\S+) root")


def heal_host(remote: Remote) -> list[str]:
    """What was undone on one host (an empty list when nothing was left)."""
    done: list[str] = []
    for line in remote.check(_READ_INTENTS, COMMAND_TIMEOUT_S).splitlines():
        if not line.strip():
            continue
        try:
            intent = json.loads(line)
            command, fault_id = intent["heal"], intent["id"]
        except (ValueError, KeyError, TypeError):
            continue
        result = remote.run(command, timeout=120)
        what = f"{intent.get('kind', '?')} {fault_id}"
        if intent.get("units"):
            what += " (" + ", ".join(intent["units"]) + ")"
        done.append(f"healed {what}" if result.rc == 0 else f"FAILED to heal {what}: rc={result.rc}")
    if remote.run(f"nft list table inet {TABLE}", COMMAND_TIMEOUT_S).rc == 0:
        remote.check(f"nft delete table inet {TABLE}", COMMAND_TIMEOUT_S)
        done.append(f"deleted nft table inet {TABLE}")
    for line in remote.check("tc qdisc show", COMMAND_TIMEOUT_S).splitlines():
        match = _OUR_QDISC.match(line)
        if match:
            device = match.group(1)
            remote.check(f"tc qdisc del dev {shlex.quote(device)} root", COMMAND_TIMEOUT_S)
            done.append(f"deleted qdisc {QDISC_HANDLE} on {device}")
    timers = remote.check(f"systemctl list-units --all --plain --no-legend '{UNIT_PREFIX}*.timer' | "
                          "awk '{print $1}'", COMMAND_TIMEOUT_S).split()
    for timer in timers:
        remote.run(f"systemctl stop {shlex.quote(timer)}; systemctl reset-failed {shlex.quote(timer)} "
                   f"{shlex.quote(timer.removesuffix('.timer') + '.service')} 2>/dev/null; true", COMMAND_TIMEOUT_S)
        done.append(f"stopped dead-man {timer}")
    return done


def _start_lab_container(host: Host) -> str | None:
    """A lab host whose container is down: start it (what a reboot fault's runner would have done)."""
    from kvtestbed.faults.host import lab_host_handle, start_lab_host

    try:
        if lab_host_handle(host).running():
            return None
        start_lab_host(host)
    except FaultError as exc:
        return f"does not answer, and {exc}"
    return "started the lab container again (it was down)"


def heal_hosts(inventory: Inventory, remotes: Remotes | None = None) -> dict[str, list[str]]:
    """host name -> what was undone there (or why it could not be); every host of the inventory the runner manages
    (a host with ansible_connection local is the controller, where no fault is ever made: nothing to heal there)."""
    own = remotes is None
    remotes = remotes or Remotes()

    def one(host: Host) -> list[str]:
        notes: list[str] = []
        remote = remotes(host)
        if not remote.answers() and host.in_lab:
            started = _start_lab_container(host)
            if started:
                notes.append(started)
            remote.drop_master()
        try:
            return notes + heal_host(remote)
        except RemoteError as exc:
            return [*notes, f"not healed: {exc}"]

    try:
        results = parallel([host for host in inventory.all_hosts() if not is_local(host)], one)
    finally:
        if own:
            remotes.close()
    return {name: value if isinstance(value, list) else [f"not healed: {value}"] for name, value in results.items()}


def heal_all(inventory: Inventory, remotes: Remotes | None = None) -> list[str]:
    """What was undone, one `host: what` line each (empty when nothing was left); hosts that could not be
    healed have a line starting `host: not healed` or `host: FAILED` (see failed())."""
    results = heal_hosts(inventory, remotes)
    return [f"{name}: {note}" for name in sorted(results) for note in results[name]]


def failed(lines: list[str]) -> list[str]:
    return [line for line in lines
            if line.split(": ", 1)[-1].startswith(("not healed", "FAILED", "does not answer"))]
