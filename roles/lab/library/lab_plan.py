#!/usr/bin/python
"""Ansible wrapper of kvtestbed.lab.plan: validate the lab inventory and return the plan."""

from __future__ import annotations

import os
import sys

from ansible.module_utils.basic import AnsibleModule

try:
    from kvtestbed.lab.plan import PlanError, build_plan
except ImportError:  # the lab's plays run the controller's venv python, where kvtestbed is installed
    build_plan = None

DOCUMENTATION = r"""
module: lab_plan
short_description: Validate lab hosts (address, profile, name) and resolve their hardware profiles
description:
  - Every inventory host of the lab becomes one container; this module checks the inventory once and fails
    with one line naming the host and the variable to fix.
  - Runs kvtestbed.lab.plan, so it needs the controller's python (ansible_python_interpreter set to
    ansible_playbook_python).
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

NO_KVTESTBED = ("kvtestbed is not importable by %s: run the lab's plays with "
                "ansible_python_interpreter set to ansible_playbook_python (the project's venv)")


def main():
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
    if build_plan is None:
        module.fail_json(msg=NO_KVTESTBED % sys.executable)
    p = module.params
    try:
        plan = build_plan(p["hosts"], p["subnet"], p["gateway"], p["profiles"],
                          is_root=(os.geteuid() == 0 or not p["require_root"]),
                          validate_hosts=p["validate_hosts"], lab_name=p["lab_name"])
    except PlanError as exc:
        module.fail_json(msg=f"invalid lab inventory: {exc}")
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
