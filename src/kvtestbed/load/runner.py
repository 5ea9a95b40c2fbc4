"""Run Locust headless with kvload's users and collect its reports into one folder.

Locust runs in a subprocess: importing it patches the whole process with gevent, which the controller (Ansible,
subprocesses, the scenario runner) must not be. Input is checked here first, so bad input costs one line and no
load: unknown user classes, a rate profile that cannot run, a run without an end. What only a live target can tell
(unreachable, wrong password) kvload's own preflight checks inside Locust before the first user starts (exit 2).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kvload.profiles import ProfileError, parse

EXIT_BAD_INPUT = 2


class LoadInputError(ValueError):
    """Input that cannot run: the message is one line naming what to fix."""


@dataclass
class LoadSpec:
    user_classes: list[str]
    target: str
    users: int = 10
    spawn_rate: float | None = None  # default: all users at once
    run_time_s: float | None = None  # required without a rate profile
    rate: str = ""  # an open-loop profile (kvload.profiles); its `for` is the run time
    processes: int = 1
    options: dict[str, str] = field(default_factory=dict)  # kvload options without the --kvt- prefix
    password_file: str = ""
    tls_ca: str = ""


@dataclass
class LoadResult:
    returncode: int
    out_dir: Path
    stats: list[dict[str, object]]
    hdr: dict[str, object]
    message: str  # the last line Locust or kvload printed on failure
    workers: int = 0  # Locust workers that ran the users (a deployed master's; 0 for a headless local run)
    workload: list[dict[str, object]] = field(default_factory=list)  # a master's Workload tab rows (kvload.webui)


def locust_binary() -> Path:
    return Path(sys.executable).parent / "locust"


def locustfile() -> Path:
    import kvload

    return Path(kvload.__file__).resolve().parent / "locustfile.py"


def available_user_classes() -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "kvload.catalog"], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LoadInputError(f"cannot list kvload's user classes: {last}")
    return json.loads(proc.stdout)


def check(spec: LoadSpec, known: dict[str, str]) -> float:
    """Raise LoadInputError for input that cannot run; return the run's length in seconds."""
    if not spec.user_classes:
        raise LoadInputError(f"name at least one user class ({', '.join(known)})")
    unknown = [name for name in spec.user_classes if name not in known]
    if unknown:
        raise LoadInputError(f"unknown user class {', '.join(unknown)} (known: {', '.join(known)})")
    if spec.users < 1:
        raise LoadInputError(f"--users {spec.users}: must be >= 1")
    if spec.processes < 1:
        raise LoadInputError(f"--processes {spec.processes}: must be >= 1")
    if spec.spawn_rate is not None and spec.spawn_rate <= 0:
        raise LoadInputError(f"--spawn-rate {spec.spawn_rate:g}: must be > 0")
    if "://" not in spec.target:
        raise LoadInputError(f"--target {spec.target!r}: give a URL such as redis://127.0.0.1:6379 (docs/load.md)")
    for key in spec.options:
        if not key or key.startswith("-") or "=" in key:
            raise LoadInputError(f"--option {key!r}: give NAME=VALUE, e.g. --option keys=1000")
    if spec.rate:
        try:
            profile = parse(spec.rate)
        except ProfileError as exc:
            raise LoadInputError(f"--rate: {exc}") from None
        if spec.run_time_s is not None and spec.run_time_s < profile.duration_s:
            raise LoadInputError(
                f"--run-time {spec.run_time_s:g}s ends before the rate profile (for={profile.duration_s:g})"
            )
        return spec.run_time_s or profile.duration_s
    if spec.run_time_s is None or spec.run_time_s <= 0:
        raise LoadInputError("--run-time: give a length (e.g. 30s) or a --rate profile: every run ends by itself")
    return spec.run_time_s


def argv_for(spec: LoadSpec, run_time_s: float, out_dir: Path) -> list[str]:
    argv = [
        str(locust_binary()),
        "-f",
        str(locustfile()),
        "--host",
        spec.target,
        "--headless",
        "-u",
        str(spec.users),
        "-r",
        f"{spec.spawn_rate or spec.users:g}",
        # a little past the profile's end: the profile stops the run itself (kvload.plugin), -t is the backstop
        "-t",
        f"{int(run_time_s + (5 if spec.rate else 0))}s",
        "--stop-timeout",
        "10",
        "--only-summary",
        "--json-file",
        str(out_dir / "locust"),
        "--html",
        str(out_dir / "locust.html"),
        "--csv",
        str(out_dir / "locust"),
        "--kvt-hdr-out",
        str(out_dir / "hdr.json"),
    ]
    if spec.processes > 1:
        argv += ["--processes", str(spec.processes)]
    if spec.rate:
        argv += ["--kvt-rate", spec.rate]
    if spec.password_file:
        argv += ["--kvt-password-file", spec.password_file]
    if spec.tls_ca:
        argv += ["--kvt-tls-ca", spec.tls_ca]
    for key, value in spec.options.items():
        argv += [f"--kvt-{key}", value]
    return [*argv, *spec.user_classes]


def run(
    spec: LoadSpec, out_dir: Path, known: dict[str, str] | None = None, stop: threading.Event | None = None
) -> LoadResult:
    """Locust headless until its own end; `stop` (the scenario runner's, on Ctrl-C or SIGTERM) ends it early with
    SIGTERM, after which Locust still stops its users and writes its reports."""
    run_time_s = check(spec, known if known is not None else available_user_classes())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "load.json").write_text(json.dumps({**spec.__dict__, "started": time.time()}, indent=1) + "\n")
    argv = argv_for(spec, run_time_s, out_dir)
    deadline = time.monotonic() + run_time_s + 120
    with open(out_dir / "locust.log", "w", encoding="utf-8") as log, open(out_dir / "locust.err", "w+") as err:
        proc = subprocess.Popen(argv, stdout=log, stderr=err, text=True)
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                elif stop is not None and stop.is_set():
                    proc.terminate()
                    stop = None  # once: then wait for Locust's own orderly end (bounded by the deadline)
                try:
                    proc.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
        log.write(stderr)
    stats_file = out_dir / "locust.json"
    hdr_file = out_dir / "hdr.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else []
    hdr = json.loads(hdr_file.read_text()) if hdr_file.exists() else {}
    lines = [line for line in stderr.splitlines() if line.startswith("kvload:") or "ERROR" in line]
    message = lines[-1] if lines else ""
    return LoadResult(proc.returncode, out_dir, stats, hdr, message)
