"""Filters of the lab role."""

from __future__ import annotations


def lab_host_specs(hostvars, hosts, profile_var="lab_profile"):
    """One dict per inventory host: name, address (ansible_host as written, or empty) and profile."""
    specs = []
    for name in hosts:
        host = hostvars[name]
        specs.append({
            "name": name,
            "address": str(host.get("ansible_host", "") or ""),
            "profile": str(host.get(profile_var, "") or ""),
        })
    return specs


class FilterModule:
    def filters(self):
        return {"lab_host_specs": lab_host_specs}
