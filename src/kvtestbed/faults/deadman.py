"""The dead-man: a heal that runs on the host by itself unless the runner heals first.

Before a fault with a heal is injected, each affected host gets
  1. an intent record /run/kvtestbed-faults/<id>.json (kind, unit, the heal command): what `kvtestbed heal`
     reads to undo a fault whose runner is gone, and
  2. a transient systemd timer kvt-heal-<id> that runs the heal command after `for` + grace seconds.
The timer lives in the host's systemd, not in the runner, so a runner killed with SIGKILL (or a controller
that lost its network) still leaves a host that heals itself. /run is a tmpfs: a reboot forgets both, as it
forgets the fault (nft tables, qdiscs and stopped processes do not survive a reboot either).
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

INTENT_DIR = "/run/kvtestbed-faults"
UNIT_PREFIX = "kvt-heal-"
# systemd's default timer accuracy is a minute; the dead-man must fire when it says
ACCURACY = "100ms"
_SAFE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def check_id(fault_id: str) -> str:
    """Fault ids name systemd units, nft chains and files: lower-case letters, digits and dashes only."""
    if not _SAFE_ID.match(fault_id):
        raise ValueError(f"fault id {fault_id!r}: use lower-case letters, digits and dashes (at most 63)")
    return fault_id


def unit_name(fault_id: str) -> str:
    return UNIT_PREFIX + check_id(fault_id)


def intent_path(fault_id: str) -> str:
    return f"{INTENT_DIR}/{check_id(fault_id)}.json"


def heal_script(fault_id: str, undo: str) -> str:
    """The heal as one shell line: the undo, then, if it worked, forget the intent (the undo is idempotent: it
    may run twice when the timer fires during a normal heal)."""
    return f"( {undo} ) && rm -f {intent_path(fault_id)}"


def arm_command(fault_id: str, delay_s: float, undo: str, intent: dict[str, Any]) -> str:
    """Record the intent, then start the timer: one shell line run on the host before the fault is injected."""
    record = json.dumps(dict(intent, id=fault_id, unit=unit_name(fault_id), heal=heal_script(fault_id, undo)),
                        sort_keys=True)
    delay_ms = max(1, round(delay_s * 1000))
    timer = ["systemd-run", "--quiet", "--collect", "--unit", unit_name(fault_id),
             f"--on-active={delay_ms}ms", f"--timer-property=AccuracySec={ACCURACY}",
             "--description", f"kvtestbed dead-man: heal fault {fault_id}",
             "/bin/sh", "-c", heal_script(fault_id, undo)]
    return (f"mkdir -p {INTENT_DIR} && printf '%s\\n' {shlex.quote(record)} > {intent_path(fault_id)} && "
            + shlex.join(timer))


def record_command(fault_id: str, undo: str, intent: dict[str, Any]) -> str:
    """Only the intent record, for a fault that has an undo but no dead-man time."""
    record = json.dumps(dict(intent, id=fault_id, unit=None, heal=heal_script(fault_id, undo)), sort_keys=True)
    return f"mkdir -p {INTENT_DIR} && printf '%s\\n' {shlex.quote(record)} > {intent_path(fault_id)}"


def disarm_command(fault_id: str) -> str:
    """Stop the timer (a stopped transient timer is unloaded) and forget its service; harmless if it fired."""
    unit = unit_name(fault_id)
    return (f"systemctl stop {unit}.timer 2>/dev/null; systemctl reset-failed {unit}.service {unit}.timer "
            f"2>/dev/null; rm -f {intent_path(fault_id)}; true")


def heal_and_disarm(fault_id: str, undo: str) -> str:
    """A normal heal: the undo first (the fault must end now), then the timer goes."""
    return f"{heal_script(fault_id, undo)} && {{ {disarm_command(fault_id)}; }}"
