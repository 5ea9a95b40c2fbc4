"""Processes, cgroups, mounts and commands on the controller: what every other lab module stands on.

Every command runs through run(), which bounds it by a timeout: a hung `ip`, `nft` or `debootstrap` ends in
one LabError line naming the command instead of a lab that never comes up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

CGROUP_ROOT = "/sys/fs/cgroup"
# ip, nft, tc, mount, systemctl, ssh-keygen: seconds at most, even on a loaded 2-core CI machine
DEFAULT_TIMEOUT = 120.0
# after the group is killed, how long to wait for what it wrote so far
_DRAIN_SECONDS = 5.0


class LabError(RuntimeError):
    """One line that says what failed; the Ansible wrappers hand it to fail_json as is."""


def _command(argv: Sequence[str]) -> str:
    """The command as an error names it: the program and its first arguments, never a page of them."""
    words = [word if len(word) <= 60 else word[:57] + "..." for word in argv[:4]]
    return " ".join(words) + (" ..." if len(argv) > 4 else "")


def run(argv: Sequence[str], check: bool = True, input_text: str | None = None,
        timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str, str]:
    """Run a command; return (rc, stdout, stderr).

    Raises LabError (one line) when the command is missing, runs longer than timeout seconds, or (with
    check) fails. The command runs in a session of its own so that a timeout kills everything it started
    (debootstrap's and chroot's children too), not only the first process.
    """
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise LabError(f"{_command(argv)}: {exc.strerror}") from None
    try:
        out, err = proc.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # a grandchild that left the group may still hold the pipes: do not wait on them for long
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=_DRAIN_SECONDS)
        proc.kill()
        proc.wait()
        raise LabError(f"{_command(argv)} timed out after {timeout:g} s") from None
    if check and proc.returncode != 0:
        detail = (err or out).strip().splitlines()
        raise LabError(f"{_command(argv)} failed: {detail[-1] if detail else f'rc={proc.returncode}'}")
    return proc.returncode, out, err


def remove_tree(path: str, timeout: float = 600.0) -> None:
    """rm -rf that never crosses into another file system (a host's /proc mounted inside a root)."""
    run(["rm", "-rf", "--one-file-system", path], check=False, timeout=timeout)


def write_if_changed(path: str, content: str, mode: int | None = None) -> bool:
    """Write content atomically unless the file already holds it; True when written."""
    try:
        with open(path) as handle:
            if handle.read() == content:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        handle.write(content)
    if mode is not None:
        os.chmod(path + ".tmp", mode)
    os.rename(path + ".tmp", path)
    return True


def systemd_is_pid1() -> bool:
    # the documented test (sd_booted): this directory exists only when systemd manages the machine
    return os.path.isdir("/run/systemd/system")


def read_pid(path: str) -> int:
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def pid_alive(pid: int, needle: str | None = None) -> bool:
    """True when pid runs and, if needle is given, its command line contains it (guards against reuse)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        return False
    return needle is None or needle in cmdline


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _gone_within(pid: int, needle: str | None, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid, needle):
            return True
        time.sleep(0.1)
    return not pid_alive(pid, needle)


def terminate(pid: int, needle: str | None, timeout: float = 20.0) -> bool:
    """SIGTERM then SIGKILL; returns True when the process is gone."""
    if not pid_alive(pid, needle):
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if _gone_within(pid, needle, timeout):
        return True
    for child in children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    return _gone_within(pid, needle, 5.0)


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle]


def is_mounted(path: str) -> bool:
    return os.path.realpath(path) in _mount_points()


def mounts_below(path: str) -> list[str]:
    """Mount points at or below path, deepest first (the order to unmount them)."""
    path = os.path.realpath(path)
    found = [point for point in _mount_points() if point == path or point.startswith(path + "/")]
    return sorted(found, key=len, reverse=True)


def unmount_below(path: str) -> None:
    """Unmount everything at or below path; lazily where a plain umount is refused (still busy)."""
    for point in mounts_below(path):
        run(["umount", point], check=False)
        if is_mounted(point):
            run(["umount", "-l", point], check=False)


class Cgroups:
    """Memory and CPU limits for a process we start ourselves (no systemd to ask for a scope).

    cgroup v2 (unified at /sys/fs/cgroup) or v1 (per-controller hierarchies, hybrid included).
    Groups are created below the controller's own group so that nested sandboxes work too.
    """

    def __init__(self, root: str = CGROUP_ROOT) -> None:
        self.root = root
        self.unified = os.path.exists(os.path.join(root, "cgroup.controllers"))

    def _own_path(self, controller: str) -> str:
        with open("/proc/self/cgroup") as handle:
            for line in handle:
                _, names, path = line.rstrip("\n").split(":", 2)
                if self.unified and names == "":
                    return path
                if not self.unified and controller in names.split(","):
                    return path
        return "/"

    def _dir(self, controller: str, group: str) -> str:
        if self.unified:
            return os.path.join(self.root, self._own_path("").lstrip("/"), group)
        return os.path.join(self.root, controller, self._own_path(controller).lstrip("/"), group)

    def available(self, controller: str) -> bool:
        if self.unified:
            parent = os.path.dirname(self._dir(controller, "x"))
            try:
                with open(os.path.join(parent, "cgroup.controllers")) as handle:
                    return controller in handle.read().split()
            except OSError:
                return False
        return os.path.isdir(os.path.join(self.root, controller))

    def _tracking_dirs(self, group: str) -> list[str]:
        """The group in the hierarchies an init builds its own tree in: systemd's name=systemd one and
        the unified one. Containers started from one shared cgroup would share <that>/payload/system.slice
        and, booting side by side, remove each other's unit groups (a unit then fails at "step CGROUP")."""
        if self.unified:
            return [self._dir("", group)]
        found = []
        for mount, names in (("systemd", "name=systemd"), ("unified", "")):
            if os.path.exists(os.path.join(self.root, mount, "cgroup.procs")):
                found.append(os.path.join(self.root, mount, self._own_path(names).lstrip("/"), group))
        return found

    def paths(self, group: str) -> list[str]:
        """Every directory create() may make for the group, whether or not it exists now."""
        return sorted({self._dir(c, group) for c in ("memory", "cpu")} | set(self._tracking_dirs(group)))

    def create(self, group: str, memory_bytes: int, cpu_quota_percent: int) -> tuple[list[str], dict[str, str]]:
        """Create the group with limits; return (dirs, applied) where applied names what took effect.

        The group always gets a tracking group of its own too, limits or not (see _tracking_dirs)."""
        applied: dict[str, str] = {}
        dirs: list[str] = []
        for path in self._tracking_dirs(group):
            try:
                os.makedirs(path, exist_ok=True)
                dirs.append(path)
            except OSError:
                pass  # read-only hierarchy: the container shares its parent's, as before
        limits = (("memory", memory_bytes), ("cpu", cpu_quota_percent))
        for controller, value in limits:
            if not value or not self.available(controller):
                applied[controller] = "unsupported" if value else "off"
                continue
            path = self._dir(controller, group)
            try:
                os.makedirs(path, exist_ok=True)
                self._limit(path, controller, int(value))
                applied[controller] = "applied"
                if path not in dirs:
                    dirs.append(path)
            except OSError as exc:
                applied[controller] = f"unsupported ({exc.strerror})"
        return dirs, applied

    def _limit(self, path: str, controller: str, value: int) -> None:
        if controller == "memory":
            name = "memory.max" if self.unified else "memory.limit_in_bytes"
            _write(os.path.join(path, name), str(value))
        elif self.unified:
            _write(os.path.join(path, "cpu.max"), f"{value * 1000} 100000")
        else:
            _write(os.path.join(path, "cpu.cfs_period_us"), "100000")
            _write(os.path.join(path, "cpu.cfs_quota_us"), str(value * 1000))

    @staticmethod
    def enter(dirs: Iterable[str]) -> None:
        """Move the calling process into every group (run in the child before exec)."""
        for path in dirs:
            _write(os.path.join(path, "cgroup.procs"), str(os.getpid()))

    @staticmethod
    def _tree(path: str) -> list[str]:
        """The group and every group below it, deepest first (the order rmdir needs)."""
        below = [os.path.join(top, name) for top, names, _ in os.walk(path, topdown=False) for name in names]
        return below + [path]

    @classmethod
    def procs(cls, dirs: Iterable[str]) -> set[int]:
        found: set[int] = set()
        for path in dirs:
            for group in cls._tree(path):
                try:
                    with open(os.path.join(group, "cgroup.procs")) as handle:
                        found.update(int(pid) for pid in handle.read().split())
                except OSError:
                    continue
        return found

    @classmethod
    def kill_all(cls, dirs: Sequence[str], timeout: float = 10.0) -> bool:
        """SIGKILL whatever still runs in the groups: a container's init outlives an nspawn killed hard."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = cls.procs(dirs)
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        return not cls.procs(dirs)

    @classmethod
    def remove(cls, dirs: Sequence[str]) -> None:
        cls.kill_all(dirs)
        # the container's own init leaves its unit groups below ours when it is killed
        groups = [group for path in sorted(dirs, key=len, reverse=True) for group in cls._tree(path)]
        for path in groups:
            for _ in range(20):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)  # the kernel frees a group a moment after its last process exits


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)
