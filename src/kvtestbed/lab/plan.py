"""Validate the lab inventory and return the plan the other lab modules carry out."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from kvtestbed.lab.runtime import LabError

# nspawn names the host side of a container's veth "vb-<machine>", and Linux caps names at 15 bytes
MAX_NAME = 12
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,19}$")
PROFILE_KEYS = {"memory_mb", "cpu_quota_percent", "link_mbit", "emulates", "description", "userland"}
# Debian architectures a host's root may have besides the controller's (QEMU user emulation runs it)
USERLANDS = ("arm64", "armhf", "amd64")


class PlanError(LabError):
    """One line, naming the host and the variable to fix."""


def _profile(name: str, profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec = profiles[name]
    unknown = set(spec) - PROFILE_KEYS
    if unknown:
        raise PlanError(f"lab_hardware_profiles.{name}: unknown key {sorted(unknown)[0]}")
    for key in ("memory_mb", "cpu_quota_percent", "link_mbit"):
        value = spec.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PlanError(f"lab_hardware_profiles.{name}.{key} must be a whole number >= 0, not {value!r}")
    userland = spec.get("userland", "")
    if userland and userland not in USERLANDS:
        raise PlanError(f"lab_hardware_profiles.{name}.userland {userland!r}: use one of {', '.join(USERLANDS)}")
    return {
        "userland": userland,
        "memory_mb": spec.get("memory_mb", 0),
        "cpu_quota_percent": spec.get("cpu_quota_percent", 0),
        "link_mbit": spec.get("link_mbit", 0),
        "emulates": spec.get("emulates", ""),
    }


def _network(subnet: str, gateway: str) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]:
    try:
        network = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise PlanError(f"lab_subnet {subnet!r} is not a network in CIDR form ({exc})") from None
    if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen > 29:
        raise PlanError(f"lab_subnet {subnet} must be an IPv4 network of /29 or larger")
    try:
        gw = ipaddress.IPv4Address(gateway) if gateway else network.network_address + 1
    except ValueError:
        raise PlanError(f"lab_gateway {gateway!r} is not an IPv4 address") from None
    if gw not in network:
        raise PlanError(f"lab_gateway {gw} is outside lab_subnet {network}")
    return network, gw


def _host(host: dict[str, Any], network: ipaddress.IPv4Network, gw: ipaddress.IPv4Address,
          profiles: dict[str, dict[str, Any]], seen: dict[str, str]) -> dict[str, Any]:
    name = host.get("name", "")
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise PlanError(f"host {name!r}: lab host names are lowercase letters, digits and '-', "
                        f"at most {MAX_NAME} characters")
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
    if str(ip) in seen:
        raise PlanError(f"hosts {seen[str(ip)]} and {name} share ansible_host {ip}; give each its own address")
    seen[str(ip)] = name
    profile = host.get("profile") or ""
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise PlanError(f"host {name}: unknown lab_profile {profile!r}; known: {known}")
    return {"name": name, "address": str(ip), "profile": profile, **_profile(profile, profiles)}


def build_plan(hosts: list[dict[str, Any]], subnet: str, gateway: str, profiles: dict[str, dict[str, Any]],
               is_root: bool = True, validate_hosts: bool = True, lab_name: str = "default") -> dict[str, Any]:
    """The lab's network (subnet, prefix, gateway) and its hosts with their profiles resolved.

    Raises PlanError naming the host and the variable to fix. validate_hosts=False (down) checks only the
    network: down must work whatever the inventory says now."""
    if not is_root:
        raise PlanError("the lab needs root (it creates a bridge, nftables rules and containers): run as root")
    if not LAB_NAME_RE.match(lab_name):
        raise PlanError(f"lab_name {lab_name!r}: use lowercase letters, digits and '_' (at most 20, a letter first)")
    network, gw = _network(subnet, gateway)
    plan: dict[str, Any] = {"subnet": str(network), "prefix": network.prefixlen, "gateway": str(gw), "hosts": []}
    if not validate_hosts:
        return plan
    if not hosts:
        raise PlanError("the lab inventory has no hosts: add hosts with ansible_host and lab_profile")
    seen: dict[str, str] = {}
    plan["hosts"] = [_host(host, network, gw, profiles, seen) for host in hosts]
    return plan
