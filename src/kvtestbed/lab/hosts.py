"""The lab's hosts: each an overlay root on the base image, booted by systemd-nspawn with its profile's limits.

Hosts found in the hosts directory but not asked for are removed, so the inventory stays the single source
of truth. Hosts come up (and go) in parallel.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kvtestbed.lab import runtime as rt
from kvtestbed.lab.runtime import LabError, run

NEEDLE = "systemd-nspawn"
# nspawn keeps a per-machine directory here; one left by a killed nspawn makes the next start refuse
# ("Attempted to remove disk file system") where /run is not a tmpfs
PROPAGATE_DIR = "/run/systemd/nspawn/propagate"
# systemd stops a unit within its own stop timeout (90 s by default); wait a little longer than that
UNIT_STOP_TIMEOUT = 120.0
# an emulated host's poweroff from inside (every unit stopped by emulated binaries): seconds, then the usual stop
EMULATED_POWEROFF_TIMEOUT = 60.0


def unit_name(name: str) -> str:
    return f"kvtestbed-lab-{name}.service"


@dataclass
class Lab:
    """What every host of one lab shares."""

    hosts_dir: str
    prefix: int = 24
    gateway: str = ""
    bridge: str = ""
    image: str = ""
    image_id: str = ""
    ssh_pubkey: str = ""
    boot_timeout: int = 60
    runtime: str = "auto"  # auto, systemd (transient units) or detached (a process per host, PID file)
    # images of foreign architectures: {"arm64": {"path": ..., "id": ...}} for hosts whose userland is one
    foreign_images: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class HostSpec:
    name: str
    address: str = ""
    memory_mb: int = 0
    cpu_quota_percent: int = 0
    link_mbit: int = 0
    userland: str = ""  # a foreign Debian architecture (arm64) run under QEMU user emulation, or "" (native)

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> HostSpec:
        keys = ("address", "memory_mb", "cpu_quota_percent", "link_mbit", "userland")
        known = {key: spec[key] for key in keys if key in spec and spec[key] is not None}
        return cls(name=spec["name"], **known)


class Host:
    def __init__(self, lab: Lab, spec: HostSpec) -> None:
        self.lab = lab
        self.spec = spec
        self.name = spec.name
        self.dir = os.path.join(lab.hosts_dir, spec.name)
        self.root = os.path.join(self.dir, "root")
        self.state_path = os.path.join(self.dir, "host.json")
        self.pid_path = os.path.join(self.dir, "nspawn.pid")
        runtime = lab.runtime
        if runtime == "auto":
            runtime = "systemd" if rt.systemd_is_pid1() else "detached"
        self.runtime = runtime
        self.needle = f"-M {spec.name} "
        native = {"path": lab.image, "id": lab.image_id}
        image = lab.foreign_images.get(spec.userland, {}) if spec.userland else native
        self.image, self.image_id = str(image.get("path", "")), str(image.get("id", ""))
        self.emulated = bool(image.get("emulated"))  # its binaries run under QEMU user emulation

    # ---- persisted state -------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        try:
            with open(self.state_path) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def save(self, state: dict[str, Any]) -> None:
        os.makedirs(self.dir, exist_ok=True)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(state, handle, indent=1, sort_keys=True)
        os.rename(tmp, self.state_path)

    def fingerprint(self) -> str:
        """What, once changed, needs the host restarted (its address, limits, link or base image)."""
        s, lab = self.spec, self.lab
        values = [s.address, lab.prefix, lab.gateway, lab.bridge, s.memory_mb, s.cpu_quota_percent, s.link_mbit,
                  self.image_id]
        return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:12]

    # ---- process -----------------------------------------------------------------------------
    def pid(self) -> int:
        if self.runtime == "systemd":
            rc, out, _ = run(["systemctl", "show", "-p", "MainPID", "--value", unit_name(self.name)], check=False)
            return int(out.strip() or 0) if rc == 0 else 0
        return rt.read_pid(self.pid_path)

    def running(self) -> bool:
        return rt.pid_alive(self.pid(), self.needle)

    def leader(self) -> int:
        """The container's init (nspawn's child): where host0 lives."""
        kids = rt.children(self.pid())
        return kids[0] if kids else 0

    def clear_runtime_leftovers(self) -> None:
        stale = os.path.join(PROPAGATE_DIR, self.name)
        if os.path.isdir(stale):
            run(["umount", "-R", stale], check=False)
            rt.remove_tree(stale)

    def start(self, state: dict[str, Any]) -> None:
        lab, spec = self.lab, self.spec
        self.clear_runtime_leftovers()
        argv = [NEEDLE, "--boot", "--keep-unit", "--network-bridge=" + lab.bridge, "-D", self.root,
                "-M", spec.name, "--console=read-only", "--resolv-conf=copy-host", "--link-journal=no"]
        mem = spec.memory_mb * 1024 * 1024
        if self.runtime == "systemd":
            props = ["--property=KillMode=mixed", "--property=Delegate=yes"]
            if mem:
                props.append(f"--property=MemoryMax={mem}")
            if spec.cpu_quota_percent:
                props.append(f"--property=CPUQuota={spec.cpu_quota_percent}%")
            run(["systemctl", "reset-failed", unit_name(spec.name)], check=False)
            run(["systemd-run", "--unit=" + unit_name(spec.name), "--collect", *props, *argv, "--register=yes"])
            state["limits"] = {"memory": "applied" if mem else "off",
                               "cpu": "applied" if spec.cpu_quota_percent else "off"}
            state["cgroups"] = []
        else:
            dirs, applied = rt.Cgroups().create(f"kvtestbed-lab/{spec.name}", mem, spec.cpu_quota_percent)
            state["cgroups"], state["limits"] = dirs, applied
            # a long-lived container, not a command to wait for: run()'s timeout does not apply
            with open(os.path.join(self.dir, "console.log"), "ab") as console:
                proc = subprocess.Popen([*argv, "--register=no"], stdin=subprocess.DEVNULL, stdout=console,
                                        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                        preexec_fn=lambda: rt.Cgroups.enter(dirs))
            with open(self.pid_path, "w") as handle:
                handle.write(f"{proc.pid}\n")
        state["runtime"] = self.runtime
        state["started"] = time.time()

    def stop(self, state: dict[str, Any]) -> None:
        if self.emulated or state.get("emulated"):  # a host no longer listed knows it from its state
            self.power_off()
        if self.runtime == "systemd":
            run(["systemctl", "stop", unit_name(self.name)], check=False, timeout=UNIT_STOP_TIMEOUT)
        elif not rt.terminate(rt.read_pid(self.pid_path), self.needle):
            raise LabError(f"host {self.name}: systemd-nspawn did not stop")
        if os.path.exists(self.pid_path):
            os.remove(self.pid_path)
        self.clear_runtime_leftovers()
        rt.Cgroups.remove(state.get("cgroups", []))
        for path in state.get("cgroups", []):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))  # the shared kvtestbed-lab parent, once empty
        state["cgroups"] = []

    def power_off(self, timeout: float = EMULATED_POWEROFF_TIMEOUT) -> None:
        """Under QEMU user emulation the container's systemd misreads the real-time signals nspawn's stop sends
        (it lands in rescue mode and waits out its timeout): ask it to power off from inside, bounded."""
        leader = self.leader()
        if not leader:
            return
        run(["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "systemctl", "poweroff", "--no-block"],
            check=False, timeout=30)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            time.sleep(0.2)

    # ---- filesystem ----------------------------------------------------------------------------
    def mount(self) -> bool:
        for sub in ("upper", "work", "root"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        if rt.is_mounted(self.root):
            return False
        if not self.image:
            raise LabError(f"host {self.name}: no {self.spec.userland} image was built for it")
        options = "lowerdir={},upperdir={},workdir={}".format(
            os.path.realpath(self.image), os.path.join(self.dir, "upper"), os.path.join(self.dir, "work"))
        run(["mount", "-t", "overlay", "overlay", "-o", options, self.root])
        return True

    def wipe(self) -> None:
        rt.unmount_below(self.root)
        rt.remove_tree(self.dir)

    def _put(self, rel: str, content: str, mode: int = 0o644) -> bool:
        return rt.write_if_changed(os.path.join(self.root, rel.lstrip("/")), content, mode)

    def configure(self) -> bool:
        spec, lab = self.spec, self.lab
        network = (f"[Match]\nName=host0\n\n[Network]\nAddress={spec.address}/{lab.prefix}\nGateway={lab.gateway}\n"
                   "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
        machine_id = hashlib.md5(("kvtestbed-lab:" + spec.name).encode()).hexdigest()
        changed = any([
            self._put("/etc/hostname", spec.name + "\n"),
            self._put("/etc/machine-id", machine_id + "\n", 0o444),
            self._put("/etc/systemd/network/10-lab.network", network),
            self._put("/root/.ssh/authorized_keys", lab.ssh_pubkey.strip() + "\n", 0o600),
            self.emulated and self._address_unit(),
        ])
        os.chmod(os.path.join(self.root, "root/.ssh"), 0o700)
        hosts_file = os.path.join(self.root, "etc/hosts")
        try:
            with open(hosts_file) as handle:
                known = handle.read()
        except FileNotFoundError:  # minbase has no netbase to write one
            known = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
            with open(hosts_file, "w") as handle:
                handle.write(known)
        if spec.name not in known.split():
            with open(hosts_file, "a") as handle:
                handle.write(f"127.0.1.1\t{spec.name}\n")
            changed = True
        if not os.path.exists(os.path.join(self.root, "etc/ssh/ssh_host_ed25519_key")):
            run(["ssh-keygen", "-A", "-f", self.root])
            changed = True
        return changed

    def _address_unit(self) -> bool:
        """systemd-networkd cannot run under QEMU user emulation (it needs NETLINK_GENERIC, which QEMU refuses;
        the emulated image masks it): a oneshot unit gives host0 the address networkd would have."""
        spec, lab = self.spec, self.lab
        unit = ("[Unit]\nDescription=kvtestbed lab address on host0 (networkd cannot run under QEMU user emulation)\n"
                "DefaultDependencies=no\nBefore=network.target ssh.service\nWants=network.target\n\n"
                "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
                "ExecStart=/usr/sbin/ip link set host0 up\n"
                f"ExecStart=/usr/sbin/ip address replace {spec.address}/{lab.prefix} dev host0\n"
                f"ExecStart=/usr/sbin/ip route replace default via {lab.gateway}\n\n"
                "[Install]\nWantedBy=multi-user.target\n")
        name = "kvtestbed-lab-address.service"
        changed = self._put(f"/etc/systemd/system/{name}", unit)
        link = os.path.join(self.root, "etc/systemd/system/multi-user.target.wants", name)
        if not os.path.islink(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(f"/etc/systemd/system/{name}", link)
            changed = True
        return changed

    # ---- link --------------------------------------------------------------------------------
    @property
    def veth(self) -> str:
        return ("vb-" + self.name)[:15]

    def shape(self) -> str:
        """tbf on both ends of the veth: host side shapes what the host receives, host0 what it sends."""
        rate = self.spec.link_mbit
        if not rate:
            return "off"
        spec = ["tbf", "rate", f"{rate}mbit", "burst", "256kb", "latency", "50ms"]
        leader = self.leader()
        applied = []
        ends: list[tuple[list[str], str]] = [([], self.veth)]
        if leader:
            ends.insert(0, (["nsenter", "-t", str(leader), "-n"], "host0"))
        for prefix, dev in ends:
            _, out, _ = run([*prefix, "tc", "qdisc", "show", "dev", dev], check=False)
            if "tbf" in out and (f"rate {rate}Mbit" in out or f"rate {rate // 1000}Gbit" in out):
                applied.append(dev)
                continue
            rc, _, _ = run([*prefix, "tc", "qdisc", "replace", "dev", dev, "root", *spec], check=False)
            if rc == 0:
                applied.append(dev)
        return "applied" if len(applied) == 2 else "partial ({})".format(",".join(applied))

    def wait_for_veth(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(f"/sys/class/net/{self.veth}") and self.leader():
                return True
            time.sleep(0.05)
        return False

    def wait_for_ssh(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return False
            try:
                with socket.create_connection((self.spec.address, 22), timeout=1.0) as sock:
                    sock.settimeout(2.0)
                    if sock.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def console_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "console.log"), "rb") as handle:
                lines = handle.read().decode("utf-8", "replace").strip().splitlines()
            return lines[-1] if lines else ""
        except OSError:
            return ""


def ensure_running(host: Host) -> tuple[bool, dict[str, Any]]:
    spec, lab = host.spec, host.lab
    state = host.load()
    changed = False
    if state and state.get("image_id") != host.image_id:
        host.stop(state)  # a new base image means a fresh host, as a re-imaged machine would be
        host.wipe()
        state, changed = {}, True
    if host.running() and state.get("fingerprint") != host.fingerprint():
        host.stop(state)
        changed = True
    changed |= host.mount()
    changed |= host.configure()
    state.update({"name": spec.name, "address": spec.address, "image_id": host.image_id, "emulated": host.emulated,
                  "fingerprint": host.fingerprint(), "root": host.root})
    boot_seconds = None
    if not host.running():
        # whatever a killed session left running in this host's groups goes first (recorded or current paths)
        stale = set(host.load().get("cgroups", []))
        stale.update(rt.Cgroups().paths(f"kvtestbed-lab/{spec.name}"))
        rt.Cgroups.remove(sorted(stale))
        started = time.monotonic()
        host.start(state)
        host.save(state)
        if not host.wait_for_veth():
            raise LabError(f"host {spec.name}: container did not start ({host.console_tail()})")
        changed = True
        if not host.wait_for_ssh(lab.boot_timeout):
            raise LabError(f"host {spec.name}: sshd did not answer on {spec.address}:22 within "
                           f"{lab.boot_timeout}s ({host.console_tail()})")
        boot_seconds = round(time.monotonic() - started, 2)
    state["link"] = host.shape()
    host.save(state)
    return changed, dict(state, pid=host.pid(), boot_seconds=boot_seconds)


def ensure_absent(host: Host) -> tuple[bool, dict[str, Any]]:
    state = host.load()
    existed = os.path.isdir(host.dir) or host.running()
    if host.running() or state:
        host.stop(state)
    host.wipe()
    if host.runtime == "systemd":
        run(["systemctl", "reset-failed", unit_name(host.name)], check=False)
    return existed, {"name": host.name, "state": "absent"}


def ensure_key(path: str) -> str:
    """The lab's own key pair, made once; returns the public half."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvtestbed-lab", "-f", path])
    with open(path + ".pub") as handle:
        return handle.read().strip()


def existing_hosts(hosts_dir: str) -> list[str]:
    try:
        return sorted(name for name in os.listdir(hosts_dir) if os.path.isdir(os.path.join(hosts_dir, name)))
    except FileNotFoundError:
        return []


def apply(lab: Lab, specs: list[dict[str, Any]]) -> tuple[bool, list[dict[str, Any]], list[str]]:
    """Remove unlisted hosts, then bring the listed ones up in parallel; (changed, results, errors).

    An empty specs list removes every host of the lab."""
    wanted = {spec["name"] for spec in specs}
    jobs = [(ensure_absent, Host(lab, HostSpec(name))) for name in existing_hosts(lab.hosts_dir)
            if name not in wanted]
    jobs += [(ensure_running, Host(lab, HostSpec.from_dict(spec))) for spec in specs]

    def one(job: tuple[Any, Host]) -> tuple[bool, dict[str, Any], str | None]:
        action, host = job
        try:
            changed, result = action(host)
            return changed, result, None
        except (LabError, OSError) as exc:
            return False, {"name": host.name}, f"{exc}"

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs)))) as pool:
        outcomes = list(pool.map(one, jobs))
    changed = any(outcome[0] for outcome in outcomes)
    results = [outcome[1] for outcome in outcomes if outcome[1].get("state") != "absent"]
    errors = [outcome[2] for outcome in outcomes if outcome[2]]
    return changed, results, errors


def write_status(path: str, specs: list[dict[str, Any]], results: list[dict[str, Any]],
                 extra: dict[str, Any]) -> bool:
    """The lab's status.json (what `kvtestbed lab status` reads): every host as asked, with what took effect."""
    by_name = {result["name"]: result for result in results}
    hosts = []
    for spec in specs:
        entry = dict(spec)
        result = by_name.get(spec["name"], {})
        entry.update({key: result.get(key) for key in ("runtime", "limits", "link")})
        hosts.append(entry)
    content = json.dumps(dict(extra, hosts=hosts), indent=2, sort_keys=True) + "\n"
    return rt.write_if_changed(path, content)
