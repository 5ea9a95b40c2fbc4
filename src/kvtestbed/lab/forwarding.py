"""IPv4 forwarding is one switch for the whole machine, and several labs may need it at once.

A record under the labs' state directory (default /var/lib/kvtestbed/lab/ip_forward.json) names the labs
that hold forwarding on and the value the machine had before the first of them came up:

    {"before": "0", "holders": {"lifecycle": "/var/lib/kvtestbed/lab/lifecycle", ...}}

acquire() turns forwarding on for a lab; release() keeps it on while another lab holds it and writes the
value from before back when the last one goes. A holder whose lab state directory is gone (removed by hand,
a lab that can never run `down` again) no longer counts. Every change happens under an exclusive flock on
ip_forward.lock beside the record, so labs coming up and going down side by side see one another.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

FORWARD = "/proc/sys/net/ipv4/ip_forward"
RECORD_NAME = "ip_forward.json"  # the dot keeps it apart from lab directories (lab names have none)
LOCK_NAME = "ip_forward.lock"


@dataclass
class Record:
    before: str
    holders: dict[str, str] = field(default_factory=dict)  # lab name -> its state directory

    def live_holders(self) -> dict[str, str]:
        """Holders whose lab still has its state directory (down removes it last)."""
        return {lab: lab_dir for lab, lab_dir in self.holders.items() if os.path.isdir(lab_dir)}


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read().strip()


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def load(records_dir: str) -> Record | None:
    """The record, or None when no lab holds forwarding (or the record is unreadable: start afresh)."""
    try:
        with open(os.path.join(records_dir, RECORD_NAME)) as handle:
            data = json.load(handle)
        return Record(str(data["before"]), {str(k): str(v) for k, v in dict(data["holders"]).items()})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(records_dir: str, record: Record | None) -> None:
    path = os.path.join(records_dir, RECORD_NAME)
    if record is None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    with open(path + ".tmp", "w") as handle:
        json.dump({"before": record.before, "holders": record.holders}, handle, indent=1, sort_keys=True)
    os.rename(path + ".tmp", path)


@contextlib.contextmanager
def _locked(records_dir: str) -> Iterator[None]:
    os.makedirs(records_dir, exist_ok=True)
    with open(os.path.join(records_dir, LOCK_NAME), "a") as handle:
        # held for a read and a write or two: other labs wait milliseconds, so a blocking lock cannot hang
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def acquire(records_dir: str, lab: str, lab_dir: str, forward: str = FORWARD, before: str | None = None) -> bool:
    """Hold forwarding on for lab; True when the switch was changed.

    before: the value the lab itself saw before it first came up, when it knows one (a lab brought up before
    this record existed kept it in its own state); used only when no record exists yet."""
    with _locked(records_dir):
        record = load(records_dir)
        if record is None:
            record = Record(before=before if before is not None else _read(forward))
        # stale holders are dropped; "before" stays: it is still what the machine had before any lab
        record.holders = record.live_holders()
        record.holders[lab] = lab_dir
        _save(records_dir, record)
        if _read(forward) != "1":
            _write(forward, "1")
            return True
        return False


def release(records_dir: str, lab: str, forward: str = FORWARD) -> bool | None:
    """Let go of forwarding for lab; True when the switch was changed.

    While another live lab holds it, forwarding stays as it is; the last one out writes back the value from
    before the first one came in. None when there is no record at all (nothing to release)."""
    with _locked(records_dir):
        record = load(records_dir)
        if record is None:
            return None
        record.holders.pop(lab, None)
        record.holders = record.live_holders()
        if record.holders:
            _save(records_dir, record)
            return False
        _save(records_dir, None)
        if _read(forward) != record.before:
            _write(forward, record.before)
            return True
        return False
