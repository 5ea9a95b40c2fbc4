#!/usr/bin/python
"""One lab host: an overlay root on the base image, booted by systemd-nspawn, with its profile's limits."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time

DOCUMENTATION = r"""
module: lab_hosts
short_description: Boot (or remove) the emulated hosts of the lab with systemd-nspawn, in parallel
description:
  - Each host is an overlay root on the base image, booted with systemd as PID 1, a static address on the
    lab bridge, its hardware profile's memory and CPU limits (cgroups) and tbf link shaping.
  - Hosts found in hosts_dir but not listed are removed, so the inventory stays the single source of truth.
options:
  hosts:
    type: list
    elements: dict
    default: []
    description: Hosts to run (name, address, memory_mb, cpu_quota_percent, link_mbit, and anything else to record).
  prefix: {type: int, default: 24, description: Prefix length of the lab subnet.}
  gateway: {type: str, default: "", description: The controller's address on the bridge.}
  bridge: {type: str, default: "", description: Lab bridge.}
  image: {type: path, default: "", description: Base image root (required when running).}
  image_id: {type: str, default: "", description: Recipe hash of the image; a new one recreates the host.}
  hosts_dir: {type: path, required: true, description: Where host roots and state live.}
  ssh_key: {type: path, default: "", description: The lab's private key (ed25519); generated when missing, its public half is what root trusts.}
  boot_timeout: {type: int, default: 60, description: Seconds to wait for sshd to answer.}
  runtime: {type: str, choices: [auto, systemd, detached], default: auto, description: How nspawn is supervised.}
  status_file: {type: path, default: "", description: Where to write the lab's status (hosts + status_extra).}
  status_extra: {type: dict, default: {}, description: Lab-wide facts to record in the status file.}
  state: {type: str, choices: [running, absent], default: running, description: absent removes every host.}
"""

RETURN = r"""
hosts: {description: Per host state (runtime, pid, limits applied, boot seconds)., returned: always, type: list}
"""

NEEDLE = "systemd-nspawn"
# nspawn keeps a per-machine directory here; one left by a killed nspawn makes the next start refuse
# ("Attempted to remove disk file system") where /run is not a tmpfs
PROPAGATE_DIR = "/run/systemd/nspawn/propagate"


def unit_name(name):
    return f"kvtestbed-lab-{name}.service"


class Host:
    def __init__(self, params, rt):
        self.p = params
        self.rt = rt
        self.dir = os.path.join(params["hosts_dir"], params["name"])
        self.root = os.path.join(self.dir, "root")
        self.state_path = os.path.join(self.dir, "host.json")
        self.pid_path = os.path.join(self.dir, "nspawn.pid")
        runtime = params["runtime"]
        if runtime == "auto":
            runtime = "systemd" if rt.systemd_is_pid1() else "detached"
        self.runtime = runtime

    # ---- persisted state -------------------------------------------------------------------------
    def load(self):
        try:
            with open(self.state_path) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {}

    def save(self, state):
        os.makedirs(self.dir, exist_ok=True)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(state, handle, indent=1, sort_keys=True)
        os.rename(tmp, self.state_path)

    def fingerprint(self):
        keys = ("address", "prefix", "gateway", "bridge", "memory_mb", "cpu_quota_percent", "link_mbit", "image_id")
        return hashlib.sha256(json.dumps([self.p[k] for k in keys]).encode()).hexdigest()[:12]

    # ---- process -----------------------------------------------------------------------------
    def pid(self):
        if self.runtime == "systemd":
            rc, out, _ = self.rt.run(["systemctl", "show", "-p", "MainPID", "--value", unit_name(self.p["name"])],
                                     check=False)
            return int(out.strip() or 0) if rc == 0 else 0
        return self.rt.read_pid(self.pid_path)

    def running(self):
        return self.rt.pid_alive(self.pid(), "-M {} ".format(self.p["name"]))

    def leader(self):
        kids = self.rt.children(self.pid())
        return kids[0] if kids else 0

    def clear_runtime_leftovers(self):
        stale = os.path.join(PROPAGATE_DIR, self.p["name"])
        if os.path.isdir(stale):
            self.rt.run(["umount", "-R", stale], check=False)
            subprocess.run(["rm", "-rf", "--one-file-system", stale], check=False)

    def start(self, state):
        p, rt = self.p, self.rt
        self.clear_runtime_leftovers()
        argv = [NEEDLE, "--boot", "--keep-unit", "--network-bridge=" + p["bridge"], "-D", self.root,
                "-M", p["name"], "--console=read-only", "--resolv-conf=copy-host", "--link-journal=no"]
        mem = p["memory_mb"] * 1024 * 1024
        if self.runtime == "systemd":
            props = ["--property=KillMode=mixed", "--property=Delegate=yes"]
            if mem:
                props.append("--property=MemoryMax=%d" % mem)
            if p["cpu_quota_percent"]:
                props.append("--property=CPUQuota=%d%%" % p["cpu_quota_percent"])
            rt.run(["systemctl", "reset-failed", unit_name(p["name"])], check=False)
            rt.run(["systemd-run", "--unit=" + unit_name(p["name"]), "--collect"] + props + argv + ["--register=yes"])
            state["limits"] = {"memory": "applied" if mem else "off",
                               "cpu": "applied" if p["cpu_quota_percent"] else "off"}
            state["cgroups"] = []
        else:
            cgroups = rt.Cgroups()
            dirs, applied = cgroups.create("kvtestbed-lab/{}".format(p["name"]), mem, p["cpu_quota_percent"])
            state["cgroups"], state["limits"] = dirs, applied
            console = open(os.path.join(self.dir, "console.log"), "ab")
            proc = subprocess.Popen(argv + ["--register=no"], stdin=subprocess.DEVNULL, stdout=console,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                    preexec_fn=lambda: rt.Cgroups.enter(dirs))
            console.close()
            with open(self.pid_path, "w") as handle:
                handle.write("%d\n" % proc.pid)
        state["runtime"] = self.runtime
        state["started"] = time.time()

    def stop(self, state):
        rt = self.rt
        if self.runtime == "systemd":
            rt.run(["systemctl", "stop", unit_name(self.p["name"])], check=False)
        elif not rt.terminate(self.rt.read_pid(self.pid_path), "-M {} ".format(self.p["name"])):
            raise RuntimeError("host {}: systemd-nspawn did not stop".format(self.p["name"]))
        if os.path.exists(self.pid_path):
            os.remove(self.pid_path)
        self.clear_runtime_leftovers()
        rt.Cgroups.remove(state.get("cgroups", []))
        for path in state.get("cgroups", []):
            try:
                os.rmdir(os.path.dirname(path))  # the shared kvtestbed-lab parent, once empty
            except OSError:
                pass
        state["cgroups"] = []

    # ---- filesystem ----------------------------------------------------------------------------
    def mount(self):
        rt = self.rt
        for sub in ("upper", "work", "root"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        if rt.is_mounted(self.root):
            return False
        options = "lowerdir={},upperdir={},workdir={}".format(
            os.path.realpath(self.p["image"]), os.path.join(self.dir, "upper"), os.path.join(self.dir, "work"))
        rt.run(["mount", "-t", "overlay", "overlay", "-o", options, self.root])
        return True

    def unmount(self):
        for point in self.rt.mounts_below(self.root):
            self.rt.run(["umount", point], check=False)
            if self.rt.is_mounted(point):
                self.rt.run(["umount", "-l", point], check=False)

    def wipe(self):
        self.unmount()
        subprocess.run(["rm", "-rf", "--one-file-system", self.dir], check=False)

    def _put(self, rel, content, mode=0o644):
        return self.rt.write_if_changed(os.path.join(self.root, rel.lstrip("/")), content, mode)

    def configure(self):
        p = self.p
        network = ("[Match]\nName=host0\n\n[Network]\nAddress=%s/%d\nGateway=%s\nLinkLocalAddressing=no\n"
                   "IPv6AcceptRA=no\n" % (p["address"], p["prefix"], p["gateway"]))
        machine_id = hashlib.md5(("kvtestbed-lab:" + p["name"]).encode()).hexdigest()
        changed = any([
            self._put("/etc/hostname", p["name"] + "\n"),
            self._put("/etc/machine-id", machine_id + "\n", 0o444),
            self._put("/etc/systemd/network/10-lab.network", network),
            self._put("/root/.ssh/authorized_keys", p["ssh_pubkey"].strip() + "\n", 0o600),
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
        if p["name"] not in known.split():
            with open(hosts_file, "a") as handle:
                handle.write("127.0.1.1\t{}\n".format(p["name"]))
            changed = True
        if not os.path.exists(os.path.join(self.root, "etc/ssh/ssh_host_ed25519_key")):
            self.rt.run(["ssh-keygen", "-A", "-f", self.root])
            changed = True
        return changed

    # ---- link --------------------------------------------------------------------------------
    def shape(self):
        """tbf on both ends of the veth: host side shapes what the host receives, host0 what it sends."""
        rate = self.p["link_mbit"]
        if not rate:
            return "off"
        spec = ["tbf", "rate", "%dmbit" % rate, "burst", "256kb", "latency", "50ms"]
        veth = ("vb-" + self.p["name"])[:15]
        leader = self.leader()
        applied = []
        for prefix, dev in ((["nsenter", "-t", str(leader), "-n"] if leader else None, "host0"), ([], veth)):
            if prefix is None:
                continue
            _, out, _ = self.rt.run(prefix + ["tc", "qdisc", "show", "dev", dev], check=False)
            if "tbf" in out and ("rate %dMbit" % rate in out or "rate %dGbit" % (rate // 1000) in out):
                applied.append(dev)
                continue
            rc, _, err = self.rt.run(prefix + ["tc", "qdisc", "replace", "dev", dev, "root"] + spec, check=False)
            if rc == 0:
                applied.append(dev)
        return "applied" if len(applied) == 2 else "partial ({})".format(",".join(applied))

    def wait_for_veth(self, timeout=15.0):
        veth = ("vb-" + self.p["name"])[:15]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(f"/sys/class/net/{veth}") and self.leader():
                return True
            time.sleep(0.05)
        return False

    def wait_for_ssh(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return False
            try:
                with socket.create_connection((self.p["address"], 22), timeout=1.0) as sock:
                    sock.settimeout(2.0)
                    if sock.recv(4).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def console_tail(self):
        try:
            with open(os.path.join(self.dir, "console.log"), "rb") as handle:
                lines = handle.read().decode("utf-8", "replace").strip().splitlines()
            return lines[-1] if lines else ""
        except OSError:
            return ""


def ensure_running(host):
    p = host.p
    state = host.load()
    changed = False
    if state and state.get("image_id") != p["image_id"]:
        host.stop(state)  # a new base image means a fresh host, as a re-imaged machine would be
        host.wipe()
        state, changed = {}, True
    if host.running() and state.get("fingerprint") != host.fingerprint():
        host.stop(state)
        changed = True
    changed |= host.mount()
    changed |= host.configure()
    state.update({"name": p["name"], "address": p["address"], "image_id": p["image_id"],
                  "fingerprint": host.fingerprint(), "root": host.root})
    boot_seconds = None
    if not host.running():
        # whatever a killed session left running in this host's groups goes first (recorded or current paths)
        cgroups = host.rt.Cgroups()
        stale = set(host.load().get("cgroups", []))
        stale.update(cgroups.paths("kvtestbed-lab/{}".format(p["name"])))
        host.rt.Cgroups.remove(sorted(stale))
        started = time.monotonic()
        host.start(state)
        host.save(state)
        if not host.wait_for_veth():
            raise RuntimeError("host {}: container did not start ({})".format(p["name"], host.console_tail()))
        changed = True
        if not host.wait_for_ssh(p["boot_timeout"]):
            raise RuntimeError("host %s: sshd did not answer on %s:22 within %ds (%s)"
                               % (p["name"], p["address"], p["boot_timeout"], host.console_tail()))
        boot_seconds = round(time.monotonic() - started, 2)
    state["link"] = host.shape()
    host.save(state)
    result = dict(state, pid=host.pid(), boot_seconds=boot_seconds)
    return changed, result


def ensure_absent(host):
    state = host.load()
    existed = os.path.isdir(host.dir) or host.running()
    if host.running() or state:
        host.stop(state)
    host.wipe()
    if host.runtime == "systemd":
        host.rt.run(["systemctl", "reset-failed", unit_name(host.p["name"])], check=False)
    return existed, {"name": host.p["name"], "state": "absent"}


HOST_KEYS = ("name", "address", "memory_mb", "cpu_quota_percent", "link_mbit")
SHARED_KEYS = ("prefix", "gateway", "bridge", "image", "image_id", "hosts_dir", "ssh_pubkey", "boot_timeout",
               "runtime")


def host_params(shared, spec):
    params = {key: shared[key] for key in SHARED_KEYS}
    params.update({key: spec.get(key, 0) for key in HOST_KEYS})
    return params


def ensure_key(path, rt):
    """The lab's own key pair, made once; returns the public half."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        rt.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvtestbed-lab", "-f", path])
    with open(path + ".pub") as handle:
        return handle.read().strip()


def existing_hosts(hosts_dir):
    try:
        return sorted(name for name in os.listdir(hosts_dir) if os.path.isdir(os.path.join(hosts_dir, name)))
    except FileNotFoundError:
        return []


def apply(shared, rt):
    """Remove unlisted hosts, then bring listed ones up in parallel; return (changed, results, errors)."""
    from concurrent.futures import ThreadPoolExecutor

    specs = shared["hosts"] if shared["state"] == "running" else []
    wanted = {spec["name"] for spec in specs}
    jobs = [(ensure_absent, Host(host_params(shared, {"name": name}), rt))
            for name in existing_hosts(shared["hosts_dir"]) if name not in wanted]
    jobs += [(ensure_running, Host(host_params(shared, spec), rt)) for spec in specs]

    def one(job):
        action, host = job
        try:
            return action(host) + (None,)
        except (RuntimeError, OSError) as exc:
            return False, {"name": host.p["name"]}, f"{exc}"

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs)))) as pool:
        outcomes = list(pool.map(one, jobs))
    changed = any(outcome[0] for outcome in outcomes)
    results = [outcome[1] for outcome in outcomes if outcome[1].get("state") != "absent"]
    errors = [outcome[2] for outcome in outcomes if outcome[2]]
    return changed, results, errors


def write_status(path, specs, results, extra, rt):
    by_name = {result["name"]: result for result in results}
    hosts = []
    for spec in specs:
        entry = dict(spec)
        result = by_name.get(spec["name"], {})
        entry.update({key: result.get(key) for key in ("runtime", "limits", "link")})
        hosts.append(entry)
    content = json.dumps(dict(extra, hosts=hosts), indent=2, sort_keys=True) + "\n"
    return rt.write_if_changed(path, content)


def main():
    from ansible.module_utils import lab_runtime
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec=dict(
            hosts=dict(type="list", elements="dict", default=[]),
            prefix=dict(type="int", default=24),
            gateway=dict(type="str", default=""),
            bridge=dict(type="str", default=""),
            image=dict(type="path", default=""),
            image_id=dict(type="str", default=""),
            hosts_dir=dict(type="path", required=True),
            ssh_key=dict(type="path", default=""),
            boot_timeout=dict(type="int", default=60),
            runtime=dict(type="str", choices=["auto", "systemd", "detached"], default="auto"),
            status_file=dict(type="path", default=""),
            status_extra=dict(type="dict", default={}),
            state=dict(type="str", choices=["running", "absent"], default="running"),
        ),
    )
    p = module.params
    if p["state"] == "running":
        missing = [key for key in ("image", "gateway", "bridge", "ssh_key") if not p[key]]
        if missing:
            module.fail_json(msg="lab_hosts: {} required when state is running".format(", ".join(missing)))
        try:
            p["ssh_pubkey"] = ensure_key(p["ssh_key"], lab_runtime)
        except RuntimeError as exc:
            module.fail_json(msg=f"lab SSH key: {exc}")
        os.makedirs(p["hosts_dir"], mode=0o700, exist_ok=True)
    else:
        p["ssh_pubkey"] = ""
    changed, results, errors = apply(p, lab_runtime)
    if errors:
        module.fail_json(msg="; ".join(sorted(errors)), hosts=results)
    if p["status_file"] and p["state"] == "running":
        changed |= write_status(p["status_file"], p["hosts"], results, p["status_extra"], lab_runtime)
    module.exit_json(changed=changed, hosts=results)


if __name__ == "__main__":
    main()
