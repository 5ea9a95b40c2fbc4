"""`kvtestbed lab status`: what the last `up` made, checked live (process, SSH)."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("/var/lib/kvtestbed/lab")


@dataclass(frozen=True)
class HostStatus:
    name: str
    profile: str
    address: str
    state: str
    ssh_ok: bool
    limits: str


def _process_running(hosts_dir: Path, name: str) -> bool:
    try:
        pid = int((hosts_dir / name / "nspawn.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return _unit_active(name)
    return f"-M {name} " in cmdline


def _unit_active(name: str) -> bool:
    try:
        proc = subprocess.run(["systemctl", "is-active", f"kvtestbed-lab-{name}.service"],
                              capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.stdout.strip() == "active"


def ssh_ok(address: str, key: str, timeout: int = 5) -> bool:
    argv = ["ssh", "-i", key, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={timeout}",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            f"root@{address}", "true"]
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout + 5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _limits(host: dict) -> str:
    limits = host.get("limits") or {}
    parts = [f"mem {host.get('memory_mb', 0)}M:{limits.get('memory', '?')}",
             f"cpu {host.get('cpu_quota_percent', 0)}%:{limits.get('cpu', '?')}",
             f"link {host.get('link_mbit', 0)}M:{host.get('link', '?')}"]
    return " ".join(parts)


def lab_status(lab_name: str = "default", state_dir: Path = STATE_DIR) -> tuple[dict, list[HostStatus]]:
    status_file = state_dir / lab_name / "status.json"
    if not status_file.exists():
        return {}, []
    status = json.loads(status_file.read_text())
    hosts_dir = state_dir / lab_name / "hosts"

    def check(host: dict) -> HostStatus:
        running = _process_running(hosts_dir, host["name"])
        reachable = running and ssh_ok(host["address"], status["ssh_key"])
        return HostStatus(host["name"], host.get("profile", "?"), host["address"],
                          "running" if running else "stopped", reachable, _limits(host))

    with ThreadPoolExecutor(max_workers=8) as pool:
        return status, list(pool.map(check, status.get("hosts", [])))


def format_table(hosts: list[HostStatus]) -> str:
    header = ("HOST", "PROFILE", "ADDRESS", "STATE", "SSH", "LIMITS")
    rows = [header] + [(h.name, h.profile, h.address, h.state, "ok" if h.ssh_ok else "no", h.limits)
                       for h in hosts]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1]
                     for row in rows)
