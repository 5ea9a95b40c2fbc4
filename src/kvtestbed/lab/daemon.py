"""A helper daemon of the lab on the controller (chronyd), tracked by a PID file: started once, stopped on down."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

from kvtestbed.lab.runtime import LabError, pid_alive, read_pid, terminate, write_if_changed

STOP_TIMEOUT = 5.0
# a daemon that cannot start (bad config, port taken) exits at once; one alive this long has started
START_GRACE = 0.3


@dataclass
class Daemon:
    pidfile: str
    needle: str  # text its command line contains: a reused PID is not ours
    argv: list[str] = field(default_factory=list)
    config: str = ""
    config_path: str = ""
    log: str = "/dev/null"

    def pid(self) -> int:
        return read_pid(self.pidfile)

    def alive(self) -> bool:
        return pid_alive(self.pid(), self.needle)


def stop(daemon: Daemon) -> bool:
    """Stop the daemon and forget its PID; True when it was running."""
    pid = daemon.pid()
    alive = pid_alive(pid, daemon.needle)
    if alive and not terminate(pid, daemon.needle, timeout=STOP_TIMEOUT):
        raise LabError(f"lab daemon {daemon.needle} (pid {pid}) did not stop")
    if os.path.exists(daemon.pidfile):
        os.remove(daemon.pidfile)
    return alive


def ensure_started(daemon: Daemon) -> tuple[bool, int]:
    """Start the daemon unless it runs with its current config (a changed config restarts it); (changed, pid)."""
    pid = daemon.pid()
    alive = pid_alive(pid, daemon.needle)
    config_changed = bool(daemon.config_path) and write_if_changed(daemon.config_path, daemon.config)
    if alive and not config_changed:
        return False, pid
    if alive and not terminate(pid, daemon.needle, timeout=STOP_TIMEOUT):
        raise LabError(f"lab daemon {daemon.needle} (pid {pid}) did not stop for its new config")
    if not daemon.argv:
        raise LabError(f"lab daemon: argv is required to start {daemon.needle}")
    try:
        with open(daemon.log, "ab") as log:
            proc = subprocess.Popen(daemon.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
    except OSError as exc:
        raise LabError(f"lab daemon {daemon.argv[0]}: {exc.strerror}") from None
    try:
        rc = proc.wait(timeout=START_GRACE)
    except subprocess.TimeoutExpired:
        rc = None  # still running: started
    if rc is not None:
        raise LabError(f"lab daemon {daemon.needle} exited at start (rc={rc}); see {daemon.log}")
    with open(daemon.pidfile, "w") as handle:
        handle.write(f"{proc.pid}\n")
    return True, proc.pid
