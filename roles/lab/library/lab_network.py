#!/usr/bin/python
"""The lab's bridge, its NAT to the outside (nftables) and IPv4 forwarding; undone exactly on absent."""

from __future__ import annotations

import hashlib
import json
import os

DOCUMENTATION = r"""
module: lab_network
short_description: Lab bridge with the controller's address, nftables NAT and forwarding
options:
  bridge: {type: str, required: true, description: Bridge name (at most 15 characters).}
  gateway: {type: str, required: true, description: The controller's address on the bridge.}
  prefix: {type: int, required: true, description: Prefix length of the lab subnet.}
  subnet: {type: str, required: true, description: Lab subnet (CIDR).}
  table: {type: str, required: true, description: Name of the nftables table the lab owns.}
  state_file: {type: path, required: true, description: Where the forwarding setting found before the lab is kept.}
  state: {type: str, choices: [present, absent], default: present, description: Wanted state.}
"""

RETURN = r"""
capabilities: {description: What the kernel offers for link emulation (tbf, netem)., returned: present, type: dict}
"""

FORWARD = "/proc/sys/net/ipv4/ip_forward"


def ruleset(table, bridge, subnet):
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


def _read(path):
    with open(path) as handle:
        return handle.read().strip()


def _write(path, value):
    with open(path, "w") as handle:
        handle.write(value)


def bridge_present(bridge):
    return os.path.isdir(f"/sys/class/net/{bridge}/bridge")


def ensure_present(p, run):
    changed = False
    bridge, address = p["bridge"], "%s/%d" % (p["gateway"], p["prefix"])
    if os.path.exists(f"/sys/class/net/{bridge}") and not bridge_present(bridge):
        raise RuntimeError(f"network interface {bridge} exists and is not a bridge; choose another lab_bridge")
    if not bridge_present(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge"])
        changed = True
    _, out, _ = run(["ip", "-j", "addr", "show", "dev", bridge])
    addrs = ["{}/{}".format(a["local"], a["prefixlen"]) for i in json.loads(out) for a in i.get("addr_info", [])
             if a.get("family") == "inet"]
    for stale in addrs:
        if stale != address:
            run(["ip", "addr", "del", stale, "dev", bridge])
            changed = True
    if address not in addrs:
        run(["ip", "addr", "add", address, "dev", bridge])
        changed = True
    if not int(_read(f"/sys/class/net/{bridge}/flags"), 16) & 0x1:  # IFF_UP
        run(["ip", "link", "set", bridge, "up"])
        changed = True

    rules, digest = ruleset(p["table"], bridge, p["subnet"])
    rc, current, _ = run(["nft", "list", "table", "ip", p["table"]], check=False)
    if rc != 0 or (f"kvtestbed {digest}") not in current:
        script = ("delete table ip {}\n".format(p["table"]) if rc == 0 else "") + rules
        run(["nft", "-f", "-"], input_text=script)
        changed = True

    if not os.path.exists(p["state_file"]):
        os.makedirs(os.path.dirname(p["state_file"]), exist_ok=True)
        with open(p["state_file"], "w") as handle:
            json.dump({"ip_forward_before": _read(FORWARD), "bridge": bridge, "table": p["table"]}, handle)
    if _read(FORWARD) != "1":
        _write(FORWARD, "1")
        changed = True
    return changed


def probe_capabilities(bridge, run):
    caps = {}
    for kind, args in (("tbf", ["tbf", "rate", "1gbit", "burst", "128kb", "latency", "50ms"]),
                       ("netem", ["netem", "delay", "1ms"])):
        rc, _, err = run(["tc", "qdisc", "add", "dev", bridge, "root"] + args, check=False)
        caps[kind] = rc == 0
        if rc == 0:
            run(["tc", "qdisc", "del", "dev", bridge, "root"], check=False)
        else:
            caps[kind + "_error"] = (err.strip().splitlines() or ["unknown"])[-1]
    return caps


def ensure_absent(p, run):
    changed = False
    recorded = {}
    if os.path.exists(p["state_file"]):
        with open(p["state_file"]) as handle:
            recorded = json.load(handle)
    # what up recorded wins: the inventory may have changed since
    p = dict(p, bridge=recorded.get("bridge", p["bridge"]), table=recorded.get("table", p["table"]))
    if bridge_present(p["bridge"]):
        run(["ip", "link", "del", p["bridge"]])
        changed = True
    if run(["nft", "list", "table", "ip", p["table"]], check=False)[0] == 0:
        run(["nft", "delete", "table", "ip", p["table"]])
        changed = True
    if recorded:
        before = recorded.get("ip_forward_before", "0")
        if _read(FORWARD) != before:
            _write(FORWARD, before)
            changed = True
        os.remove(p["state_file"])
    return changed


def main():
    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.lab_runtime import run

    module = AnsibleModule(
        argument_spec=dict(
            bridge=dict(type="str", required=True),
            gateway=dict(type="str", required=True),
            prefix=dict(type="int", required=True),
            subnet=dict(type="str", required=True),
            table=dict(type="str", required=True),
            state_file=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
    )
    p = module.params
    if len(p["bridge"]) > 15:
        module.fail_json(msg="lab_bridge {!r} is longer than 15 characters".format(p["bridge"]))
    try:
        if p["state"] == "absent":
            module.exit_json(changed=ensure_absent(p, run))
        changed = ensure_present(p, run)
        module.exit_json(changed=changed, capabilities=probe_capabilities(p["bridge"], run))
    except RuntimeError as exc:
        module.fail_json(msg=f"lab network: {exc}")


if __name__ == "__main__":
    main()
