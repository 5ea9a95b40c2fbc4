"""Commands on inventory hosts over OpenSSH, one multiplexed connection per host.

The first call opens a ControlMaster socket in a private runtime directory; later calls reuse it, so a fault's
inject, verify and heal cost a round trip each instead of a handshake each. close() (or leaving the `with`
block) ends the master. Errors are one line naming the host and what to fix.

A host with `ansible_connection: local` (existing-cluster mode, docs/existing-cluster.md) is the controller
itself, as Ansible has it: its commands run here under `bash -c`, with the same results, timeouts and errors.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass

from kvtestbed.inventory import Host

CONNECT_TIMEOUT_S = 5
# an idle master stays this long after the last call; close() ends it sooner
CONTROL_PERSIST_S = 120
# ssh's own exit status when the connection (not the command) failed
SSH_FAILED = 255


class RemoteError(Exception):
    """One line: the host, its address, what went wrong."""


@dataclass(frozen=True)
class Completed:
    rc: int
    stdout: str
    stderr: str


def is_local(host: Host) -> bool:
    """Ansible runs this host's tasks on the controller (ansible_connection: local): no SSH to it."""
    return str(host.vars.get("ansible_connection") or "").strip().lower() == "local"


def _classify(host: Host, stderr: str) -> str:
    text = stderr.lower()
    where = f"host {host.name} ({host.address})"
    if "permission denied" in text or "no more authentication methods" in text:
        key = host.key_file or "the default key"
        return f"{where}: SSH refused the key {key} (check ansible_ssh_private_key_file)"
    if "host key verification failed" in text:
        return f"{where}: host key verification failed (check known_hosts or ansible_ssh_common_args)"
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "no reply")
    return f"{where}: does not answer on SSH ({last})"


class Remote:
    """One host's SSH connection (or the controller's shell for a local host); `run` may be called from several
    threads."""

    def __init__(self, host: Host, multiplex: bool = True, runtime_dir: str | None = None) -> None:
        self.host = host
        self.local = is_local(host)
        self.multiplex = multiplex and not self.local
        self._own_dir = runtime_dir is None
        # unix socket paths are short (108 bytes): a short private directory and ssh's %C hash fit; made only when
        # a master will live there, so a Remote that never multiplexes leaves nothing in /tmp
        self._dir = runtime_dir or (tempfile.mkdtemp(prefix="kvt-ssh-") if self.multiplex else "")
        self._control = os.path.join(self._dir, "%C")

    def _base(self) -> list[str]:
        host = self.host
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", "-o", "LogLevel=ERROR",
                "-p", str(host.port)]
        if host.key_file:
            argv += ["-i", host.key_file, "-o", "IdentitiesOnly=yes"]
        if self.multiplex:
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control}",
                     "-o", f"ControlPersist={CONTROL_PERSIST_S}"]
        argv += host.ssh_args
        target = f"{host.user}@{host.address}" if host.user else host.address
        return [*argv, target]

    def run(self, command: str, timeout: float = 30.0, input_text: str | None = None) -> Completed:
        """Run a shell command on the host; RemoteError when SSH itself fails or the command outlives timeout."""
        if self.local:
            return self._run_local(command, timeout, input_text)
        argv = [*self._base(), "--", command]
        try:
            proc = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=timeout,
                                  stdin=None if input_text is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            short = command if len(command) <= 60 else command[:57] + "..."
            raise RemoteError(f"host {self.host.name} ({self.host.address}): `{short}` did not finish within "
                              f"{timeout:g} s") from None
        except OSError as exc:
            raise RemoteError(f"host {self.host.name}: cannot run ssh ({exc.strerror})") from None
        if proc.returncode == SSH_FAILED:
            raise RemoteError(_classify(self.host, proc.stderr))
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def _run_local(self, command: str, timeout: float, input_text: str | None) -> Completed:
        """The command under bash on the controller. Its own session, so that a timeout ends everything it
        started, not just bash; rc 255 is the command's own here, not ssh's failed connection."""
        try:
            proc = subprocess.Popen(["bash", "-c", command], text=True, start_new_session=True,
                                    stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        except OSError as exc:
            raise RemoteError(f"host {self.host.name}: cannot run bash ({exc.strerror})") from None
        try:
            stdout, stderr = proc.communicate(input_text, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # it may have ended between the timeout and the kill
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            short = command if len(command) <= 60 else command[:57] + "..."
            raise RemoteError(f"host {self.host.name} ({self.host.address}): `{short}` did not finish within "
                              f"{timeout:g} s") from None
        return Completed(proc.returncode, stdout, stderr)

    def check(self, command: str, timeout: float = 30.0, input_text: str | None = None) -> str:
        """run() that also fails on a non-zero exit: stdout, or RemoteError with the command's last line."""
        done = self.run(command, timeout, input_text)
        if done.rc != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            short = command if len(command) <= 60 else command[:57] + "..."
            raise RemoteError(f"host {self.host.name} ({self.host.address}): `{short}` failed: "
                              f"{detail[-1] if detail else f'rc={done.rc}'}")
        return done.stdout

    def answers(self, timeout: float = 10.0) -> bool:
        try:
            return self.run("true", timeout=timeout).rc == 0
        except RemoteError:
            return False

    def close(self) -> None:
        self.drop_master()
        if self._own_dir and self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def drop_master(self) -> None:
        """Forget the multiplexed connection (after a reboot the old master is dead but its socket stays)."""
        if self.multiplex and os.path.isdir(self._dir) and os.listdir(self._dir):
            # asks the master to exit (ssh -O exit); a no-op when none was opened
            base = self._base()
            subprocess.run([*base[:-1], "-O", "exit", base[-1]], capture_output=True,
                           timeout=CONNECT_TIMEOUT_S + 5, stdin=subprocess.DEVNULL)

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Remotes:
    """One Remote per host name, opened on first use and all closed together."""

    def __init__(self, multiplex: bool = True) -> None:
        self.multiplex = multiplex
        self._dir = ""  # made with the first Remote: a fault context that never connects leaves nothing in /tmp
        self._open: dict[str, Remote] = {}
        self._lock = threading.Lock()  # fault threads open their hosts' Remotes side by side

    def __call__(self, host: Host) -> Remote:
        with self._lock:
            if host.name not in self._open:
                if not self._dir:
                    self._dir = tempfile.mkdtemp(prefix="kvt-ssh-")
                self._open[host.name] = Remote(host, self.multiplex, runtime_dir=self._dir)
            return self._open[host.name]

    def close(self) -> None:
        for remote in self._open.values():
            remote.close()
        self._open.clear()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""

    def __enter__(self) -> Remotes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
