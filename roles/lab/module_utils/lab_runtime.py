"""Shared helpers of the lab modules: processes, cgroups and commands on the controller.

Kept free of Ansible imports so unit tests can load it directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

CGROUP_ROOT = "/sys/fs/cgroup"


def run(argv, check=True, input_text=None):
    """Run a command; return (rc, stdout, stderr). Raise RuntimeError with one line when check fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, input=input_text)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError("{} failed: {}".format(" ".join(argv[:3]), detail[-1] if detail else "rc=%d" % proc.returncode))
    return proc.returncode, proc.stdout, proc.stderr


def write_if_changed(path, content, mode=None):
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


def systemd_is_pid1():
    # the documented test (sd_booted): this directory exists only when systemd manages the machine
    return os.path.isdir("/run/systemd/system")


def read_pid(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def pid_alive(pid, needle=None):
    """True when pid runs and, if needle is given, its command line contains it (guards against reuse)."""
    if pid <= 0:
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        return False
    return needle is None or needle in cmdline


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def terminate(pid, needle, timeout=20.0):
    """SIGTERM then SIGKILL; returns True when the process is gone."""
    if not pid_alive(pid, needle):
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, needle):
            return True
        time.sleep(0.1)
    for child in children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(50):
        if not pid_alive(pid, needle):
            return True
        time.sleep(0.1)
    return False


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == path for line in handle)


def mounts_below(path):
    """Mount points at or below path, deepest first (the order to unmount them)."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4]
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


class Cgroups:
    """Memory and CPU limits for a process we start ourselves (no systemd to ask for a scope).

    cgroup v2 (unified at /sys/fs/cgroup) or v1 (per-controller hierarchies, hybrid included).
    Groups are created below the controller's own group so that nested sandboxes work too.
    """

    def __init__(self, root=CGROUP_ROOT):
        self.root = root
        self.unified = os.path.exists(os.path.join(root, "cgroup.controllers"))

    def _own_path(self, controller):
        with open("/proc/self/cgroup") as handle:
            for line in handle:
                _, names, path = line.rstrip("\n").split(":", 2)
                if self.unified and names == "":
                    return path
                if not self.unified and controller in names.split(","):
                    return path
        return "/"

    def _dir(self, controller, group):
        if self.unified:
            return os.path.join(self.root, self._own_path("").lstrip("/"), group)
        return os.path.join(self.root, controller, self._own_path(controller).lstrip("/"), group)

    def available(self, controller):
        if self.unified:
            parent = os.path.dirname(self._dir(controller, "x"))
            try:
                with open(os.path.join(parent, "cgroup.controllers")) as handle:
                    return controller in handle.read().split()
            except OSError:
                return False
        return os.path.isdir(os.path.join(self.root, controller))

    def _tracking_dirs(self, group):
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

    def paths(self, group):
        """Every directory create() may make for the group, whether or not it exists now."""
        return sorted({self._dir(c, group) for c in ("memory", "cpu")} | set(self._tracking_dirs(group)))

    def create(self, group, memory_bytes, cpu_quota_percent):
        """Create the group with limits; return (dirs, applied) where applied names what took effect.

        The group always gets a tracking group of its own too, limits or not (see _tracking_dirs)."""
        applied, dirs = {}, []
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
                if controller == "memory":
                    name = "memory.max" if self.unified else "memory.limit_in_bytes"
                    with open(os.path.join(path, name), "w") as handle:
                        handle.write(str(int(value)))
                elif self.unified:
                    with open(os.path.join(path, "cpu.max"), "w") as handle:
                        handle.write("%d 100000" % int(value * 1000))
                else:
                    with open(os.path.join(path, "cpu.cfs_period_us"), "w") as handle:
                        handle.write("100000")
                    with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as handle:
                        handle.write(str(int(value * 1000)))
                applied[controller] = "applied"
                if path not in dirs:
                    dirs.append(path)
            except OSError as exc:
                applied[controller] = f"unsupported ({exc.strerror})"
        return dirs, applied

    @staticmethod
    def enter(dirs):
        """Move the calling process into every group (run in the child before exec)."""
        for path in dirs:
            with open(os.path.join(path, "cgroup.procs"), "w") as handle:
                handle.write(str(os.getpid()))

    @staticmethod
    def _tree(path):
        """The group and every group below it, deepest first (the order rmdir needs)."""
        below = [os.path.join(top, name) for top, names, _ in os.walk(path, topdown=False) for name in names]
        return below + [path]

    @classmethod
    def procs(cls, dirs):
        found = set()
        for path in dirs:
            for group in cls._tree(path):
                try:
                    with open(os.path.join(group, "cgroup.procs")) as handle:
                        found.update(int(pid) for pid in handle.read().split())
                except OSError:
                    continue
        return found

    @classmethod
    def kill_all(cls, dirs, timeout=10.0):
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
    def remove(cls, dirs):
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
                    time.sleep(0.1)
