"""The lab's bridge, its NAT to the outside (nftables) and IPv4 forwarding; undone exactly on down."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from kvtestbed.lab import forwarding
from kvtestbed.lab.runtime import LabError, run

MAX_BRIDGE = 15  # Linux interface names


@dataclass
class Network:
    lab: str
    bridge: str
    gateway: str
    prefix: int
    subnet: str
    table: str
    state_file: str  # the lab's network.json: what up made, so down removes that whatever the inventory says
    records_dir: str  # where the machine-wide forwarding record lives (the labs' state directory)
    forward: str = forwarding.FORWARD

    @property
    def lab_dir(self) -> str:
        return os.path.dirname(self.state_file)


def ruleset(table: str, bridge: str, subnet: str) -> tuple[str, str]:
    body = (
        f"table ip {table} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    ip saddr {subnet} oifname != \"{bridge}\" masquerade\n"
        "  }\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        f"    iifname \"{bridge}\" accept\n"
        f"    oifname \"{bridge}\" ct state established,related accept\n"
        "  }\n"
        "}\n"
    )
    digest = hashlib.sha256(body.encode()).hexdigest()[:12]
    # the digest rides in a comment so a later run can tell our exact rules from anything else
    return body.replace("policy accept;\n", f"policy accept; comment \"kvtestbed {digest}\"\n", 1), digest


def bridge_present(bridge: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{bridge}/bridge")


def _ensure_bridge(bridge: str, address: str) -> bool:
    changed = False
    if os.path.exists(f"/sys/class/net/{bridge}") and not bridge_present(bridge):
        raise LabError(f"network interface {bridge} exists and is not a bridge; choose another lab_bridge")
    if not bridge_present(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge"])
        changed = True
    _, out, _ = run(["ip", "-j", "addr", "show", "dev", bridge])
    addrs = [f"{a['local']}/{a['prefixlen']}" for i in json.loads(out) for a in i.get("addr_info", [])
             if a.get("family") == "inet"]
    for stale in addrs:
        if stale != address:
            run(["ip", "addr", "del", stale, "dev", bridge])
            changed = True
    if address not in addrs:
        run(["ip", "addr", "add", address, "dev", bridge])
        changed = True
    with open(f"/sys/class/net/{bridge}/flags") as handle:
        up = int(handle.read().strip(), 16) & 0x1  # IFF_UP
    if not up:
        run(["ip", "link", "set", bridge, "up"])
        changed = True
    return changed


def _ensure_table(table: str, bridge: str, subnet: str) -> bool:
    rules, digest = ruleset(table, bridge, subnet)
    rc, current, _ = run(["nft", "list", "table", "ip", table], check=False)
    if rc == 0 and f"kvtestbed {digest}" in current:
        return False
    script = (f"delete table ip {table}\n" if rc == 0 else "") + rules
    run(["nft", "-f", "-"], input_text=script)
    return True


def ensure_present(net: Network) -> bool:
    """Bridge with the gateway address, the NAT table, and forwarding held for this lab; True if changed."""
    if len(net.bridge) > MAX_BRIDGE:
        raise LabError(f"lab_bridge {net.bridge!r} is longer than {MAX_BRIDGE} characters")
    changed = _ensure_bridge(net.bridge, f"{net.gateway}/{net.prefix}")
    changed |= _ensure_table(net.table, net.bridge, net.subnet)
    recorded = _recorded(net.state_file)
    if not recorded:  # the first up's names: those are what down must remove
        os.makedirs(net.lab_dir, exist_ok=True)
        with open(net.state_file + ".tmp", "w") as handle:
            json.dump({"bridge": net.bridge, "table": net.table}, handle)
        os.rename(net.state_file + ".tmp", net.state_file)
    # a lab that came up before the machine-wide record existed saved the original value in its own state
    changed |= forwarding.acquire(net.records_dir, net.lab, net.lab_dir, net.forward,
                                  before=recorded.get("ip_forward_before"))
    return changed


def _recorded(state_file: str) -> dict[str, str]:
    try:
        with open(state_file) as handle:
            return dict(json.load(handle))
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError):
        return {}  # a torn file from a killed run: the inventory's names are the best guess left


def probe_capabilities(bridge: str) -> dict[str, bool | str]:
    """Which qdiscs the kernel offers for link emulation: what is missing is reported, never faked."""
    caps: dict[str, bool | str] = {}
    for kind, args in (("tbf", ["tbf", "rate", "1gbit", "burst", "128kb", "latency", "50ms"]),
                       ("netem", ["netem", "delay", "1ms"])):
        rc, _, err = run(["tc", "qdisc", "add", "dev", bridge, "root", *args], check=False)
        caps[kind] = rc == 0
        if rc == 0:
            run(["tc", "qdisc", "del", "dev", bridge, "root"], check=False)
        else:
            caps[kind + "_error"] = (err.strip().splitlines() or ["unknown"])[-1]
    return caps


def ensure_absent(net: Network) -> bool:
    """Remove bridge and table (as up recorded them) and let go of forwarding; True if anything changed."""
    recorded = _recorded(net.state_file)
    # what up recorded wins: the inventory may have changed since
    bridge, table = recorded.get("bridge", net.bridge), recorded.get("table", net.table)
    changed = False
    if bridge_present(bridge):
        run(["ip", "link", "del", bridge])
        changed = True
    if run(["nft", "list", "table", "ip", table], check=False)[0] == 0:
        run(["nft", "delete", "table", "ip", table])
        changed = True
    released = forwarding.release(net.records_dir, net.lab, net.forward)
    if released is None and "ip_forward_before" in recorded:
        # a lab brought up before the machine-wide record existed, and no lab holds forwarding now
        with open(net.forward) as handle:
            if handle.read().strip() != recorded["ip_forward_before"]:
                with open(net.forward, "w") as out:
                    out.write(recorded["ip_forward_before"])
                released = True
    changed |= bool(released)
    if recorded or os.path.exists(net.state_file):
        os.remove(net.state_file)
        changed = True
    return changed
