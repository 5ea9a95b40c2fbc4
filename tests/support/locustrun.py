"""Run kvtestbed's locustfile headless in a subprocess (bounded: -t and a hard timeout) and read what it reported.

    result = run_locust(tmp_path, "KvGetSetUser", host="redis://127.0.0.1:6379", users=20, run_time_s=5,
                        extra=["--kvt-rate", "constant:rate=2000,for=5"])
    result.stats["KV GET"]["num_requests"], result.hdr["requests"]["GET get"]["p50_us"]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.binaries import unavailable
from tests.support.servers import LOOPBACK, ManagedProcess, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"


def locust_binary() -> Path:
    path = Path(sys.executable).parent / "locust"
    if not path.exists():
        unavailable("locust is not installed in this venv (make install)")
    return path


@dataclass
class LocustResult:
    returncode: int
    stderr: str
    # request stats by "<type> <name>" from --json-file (Locust's own table)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the merged HdrHistogram summary (--kvt-hdr-out)
    hdr: dict[str, Any] = field(default_factory=dict)

    def requests(self, key: str) -> int:
        return int(self.stats[key]["num_requests"]) if key in self.stats else 0

    def failures(self) -> int:
        return sum(int(s["num_failures"]) for s in self.stats.values())

    def refusal(self) -> str:
        """The single `kvload:` line of a refused run, checking the contract: exit 2, one line, no traceback."""
        assert self.returncode == 2, self.stderr[-3000:]
        assert "Traceback" not in self.stderr, self.stderr[-3000:]
        lines = [line for line in self.stderr.splitlines() if line.startswith("kvload:")]
        assert len(lines) == 1, self.stderr[-3000:]
        return lines[0]


def run_locust(
    workdir: Path,
    *user_classes: str,
    host: str,
    users: int = 10,
    run_time_s: float = 5.0,
    extra: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    processes: int | None = None,
    timeout_s: float = 120.0,
) -> LocustResult:
    workdir.mkdir(parents=True, exist_ok=True)
    json_base = workdir / "locust"
    hdr_file = workdir / "hdr.json"
    argv = [
        str(locust_binary()),
        "-f",
        str(LOCUSTFILE),
        "--host",
        host,
        "--headless",
        "-u",
        str(users),
        "-r",
        str(max(users, 1)),
        "-t",
        f"{run_time_s:g}s",
        "--stop-timeout",
        "5",
        "--json-file",
        str(json_base),
        "--only-summary",
        "--kvt-hdr-out",
        str(hdr_file),
        "--exit-code-on-error",
        "0",
        # --processes runs a master and workers on this machine: a port of its own, so two tests side by side
        # never share a master (Locust's default 5557 would let one test's workers join the other's run)
        *(["--processes", str(processes), "--master-bind-port", str(port := free_port()), "--master-port", str(port)]
          if processes else []),
        *extra,
        *user_classes,
    ]
    base_env = {"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(workdir)}
    if "PYTHONPATH" in os.environ:
        base_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout_s, env={**base_env, **(env or {})}, cwd=workdir
    )
    result = LocustResult(proc.returncode, proc.stderr)
    json_path = json_base.with_suffix(".json")
    if json_path.exists():
        for entry in json.loads(json_path.read_text()):
            result.stats[f"{entry['method']} {entry['name']}"] = entry
    if hdr_file.exists():
        result.hdr = json.loads(hdr_file.read_text())
    return result


def commandstats(server: RedisServer) -> dict[str, int]:
    with server.client(socket_timeout=5) as c:
        info = c.info("commandstats")
    return {
        f"{cmd} {field}": int(info.get(f"cmdstat_{cmd}", {}).get(field, 0))
        for cmd in ("get", "set")
        for field in ("calls", "rejected_calls")
    }


def start_locust(workdir: Path, web_port: int, extra: list[str]) -> ManagedProcess:
    """Locust with its web UI on loopback (a master with --master, else a local runner), ready when the UI answers."""
    argv = [
        str(locust_binary()), "-f", str(LOCUSTFILE), "--web-host", LOOPBACK, "--web-port", str(web_port), *extra,
    ]  # fmt: skip
    locust = ManagedProcess("locust", argv, workdir, web_port)
    locust.start()
    return locust
