#!/usr/bin/python
"""Validate the lab inventory and return the plan the other lab modules carry out."""

from __future__ import annotations

import ipaddress
import os
import re

DOCUMENTATION = r"""
module: lab_plan
short_description: Validate lab hosts (address, profile, name) and resolve their hardware profiles
description:
  - Every inventory host of the lab becomes one container; this module checks the inventory once and fails
    with one line naming the host and the variable to fix.
options:
  hosts:
    description: List of dicts with name, address and profile, one per inventory host.
    type: list
    elements: dict
    required: true
  subnet:
    description: The lab subnet in CIDR form.
    type: str
    required: true
  gateway:
    description: The controller's address on the lab bridge; empty for the subnet's first address.
    type: str
    default: ""
  lab_name:
    description: Name of the lab (names its state directory and nftables table).
    type: str
    default: default
  profiles:
    description: Hardware profiles by name (memory_mb, cpu_quota_percent, link_mbit, emulates).
    type: dict
    required: true
  validate_hosts:
    description: Check the hosts (off for down, which must work whatever the inventory says now).
    type: bool
    default: true
  require_root:
    description: Fail unless running as root.
    type: bool
    default: true
"""

RETURN = r"""
plan:
  description: gateway, prefix and the resolved hosts.
  returned: success
  type: dict
"""

# nspawn names the host side of a container's veth "vb-<machine>", and Linux caps names at 15 bytes
MAX_NAME = 12
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
PROFILE_KEYS = {"memory_mb", "cpu_quota_percent", "link_mbit", "emulates", "description"}


class PlanError(Exception):
    """One line, naming the host and the variable to fix."""


def _profile(name, profiles):
    spec = profiles[name]
    unknown = set(spec) - PROFILE_KEYS
    if unknown:
        raise PlanError(f"lab_hardware_profiles.{name}: unknown key {sorted(unknown)[0]}")
    for key in ("memory_mb", "cpu_quota_percent", "link_mbit"):
        value = spec.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PlanError(f"lab_hardware_profiles.{name}.{key} must be a whole number >= 0, not {value!r}")
    return {
        "memory_mb": spec.get("memory_mb", 0),
        "cpu_quota_percent": spec.get("cpu_quota_percent", 0),
        "link_mbit": spec.get("link_mbit", 0),
        "emulates": spec.get("emulates", ""),
    }


LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,19}$")


def build_plan(hosts, subnet, gateway, profiles, is_root=True, validate_hosts=True, lab_name="default"):
    if not is_root:
        raise PlanError("the lab needs root (it creates a bridge, nftables rules and containers): run as root")
    if not LAB_NAME_RE.match(lab_name):
        raise PlanError(f"lab_name {lab_name!r}: use lowercase letters, digits and '_' (at most 20, a letter first)")
    try:
        network = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise PlanError(f"lab_subnet {subnet!r} is not a network in CIDR form ({exc})") from None
    if network.version != 4 or network.prefixlen > 29:
        raise PlanError(f"lab_subnet {subnet} must be an IPv4 network of /29 or larger")
    gw = ipaddress.ip_address(gateway) if gateway else network.network_address + 1
    if gw not in network:
        raise PlanError(f"lab_gateway {gw} is outside lab_subnet {network}")
    if not validate_hosts:
        return {"subnet": str(network), "prefix": network.prefixlen, "gateway": str(gw), "hosts": []}
    if not hosts:
        raise PlanError("the lab inventory has no hosts: add hosts with ansible_host and lab_profile")
    seen_addresses = {}
    plan_hosts = []
    for host in hosts:
        name = host.get("name", "")
        if not NAME_RE.match(name) or len(name) > MAX_NAME:
            raise PlanError("host %r: lab host names are lowercase letters, digits and '-', at most %d characters"
                            % (name, MAX_NAME))
        address = host.get("address") or ""
        if not address or address == name:
            raise PlanError(f"host {name}: no address; set ansible_host to an address in {network}")
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise PlanError(f"host {name}: ansible_host {address!r} is not an IPv4 address") from None
        if ip not in network:
            raise PlanError(f"host {name}: ansible_host {ip} is outside lab_subnet {network}")
        if ip in (network.network_address, network.broadcast_address, gw):
            raise PlanError(f"host {name}: ansible_host {ip} is the subnet's network, broadcast or gateway address")
        if str(ip) in seen_addresses:
            raise PlanError(f"hosts {seen_addresses[str(ip)]} and {name} share ansible_host {ip}; give each its own address")
        seen_addresses[str(ip)] = name
        profile = host.get("profile") or ""
        if profile not in profiles:
            raise PlanError("host {}: unknown lab_profile {!r}; known: {}".format(name, profile, ", ".join(sorted(profiles)) or "none"))
        entry = {"name": name, "address": str(ip), "profile": profile}
        entry.update(_profile(profile, profiles))
        plan_hosts.append(entry)
    return {
        "subnet": str(network),
        "prefix": network.prefixlen,
        "gateway": str(gw),
        "hosts": plan_hosts,
    }


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec=dict(
            hosts=dict(type="list", elements="dict", required=True),
            subnet=dict(type="str", required=True),
            gateway=dict(type="str", default=""),
            lab_name=dict(type="str", default="default"),
            profiles=dict(type="dict", required=True),
            validate_hosts=dict(type="bool", default=True),
            require_root=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        plan = build_plan(params["hosts"], params["subnet"], params["gateway"], params["profiles"],
                          is_root=(os.geteuid() == 0 or not params["require_root"]),
                          validate_hosts=params["validate_hosts"], lab_name=params["lab_name"])
    except PlanError as exc:
        module.fail_json(msg=f"invalid lab inventory: {exc}")
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
