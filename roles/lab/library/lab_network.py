#!/usr/bin/python
"""Ansible wrapper of kvtestbed.lab.network: the lab's bridge, NAT and its hold on IPv4 forwarding."""

from __future__ import annotations

import sys

from ansible.module_utils.basic import AnsibleModule

try:
    from kvtestbed.lab.network import Network, ensure_absent, ensure_present, probe_capabilities
    from kvtestbed.lab.runtime import LabError
except ImportError:  # the lab's plays run the controller's venv python, where kvtestbed is installed
    Network = None

DOCUMENTATION = r"""
module: lab_network
short_description: Lab bridge with the controller's address, nftables NAT and forwarding
description:
  - Forwarding is one switch for the whole machine; a record in records_dir names the labs holding it on and
    the value from before the first, restored when the last lab goes down.
  - Runs kvtestbed.lab.network, so it needs the controller's python (ansible_python_interpreter set to
    ansible_playbook_python).
options:
  lab_name: {type: str, required: true, description: The lab (a holder of forwarding in the record).}
  bridge: {type: str, required: true, description: Bridge name (at most 15 characters).}
  gateway: {type: str, required: true, description: The controller's address on the bridge.}
  prefix: {type: int, required: true, description: Prefix length of the lab subnet.}
  subnet: {type: str, required: true, description: Lab subnet (CIDR).}
  table: {type: str, required: true, description: Name of the nftables table the lab owns.}
  state_file: {type: path, required: true, description: "Where bridge and table names are kept for down, in the lab's state directory."}
  records_dir: {type: path, default: /var/lib/kvtestbed/lab, description: Directory of the machine-wide forwarding record (every lab's state directory's parent).}
  state: {type: str, choices: [present, absent], default: present, description: Wanted state.}
"""

RETURN = r"""
capabilities: {description: What the kernel offers for link emulation (tbf, netem)., returned: present, type: dict}
"""

NO_KVTESTBED = ("kvtestbed is not importable by %s: run the lab's plays with "
                "ansible_python_interpreter set to ansible_playbook_python (the project's venv)")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            lab_name=dict(type="str", required=True),
            bridge=dict(type="str", required=True),
            gateway=dict(type="str", required=True),
            prefix=dict(type="int", required=True),
            subnet=dict(type="str", required=True),
            table=dict(type="str", required=True),
            state_file=dict(type="path", required=True),
            records_dir=dict(type="path", default="/var/lib/kvtestbed/lab"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
    )
    if Network is None:
        module.fail_json(msg=NO_KVTESTBED % sys.executable)
    p = module.params
    net = Network(lab=p["lab_name"], bridge=p["bridge"], gateway=p["gateway"], prefix=p["prefix"],
                  subnet=p["subnet"], table=p["table"], state_file=p["state_file"], records_dir=p["records_dir"])
    try:
        if p["state"] == "absent":
            module.exit_json(changed=ensure_absent(net))
        changed = ensure_present(net)
        module.exit_json(changed=changed, capabilities=probe_capabilities(net.bridge))
    except (LabError, OSError) as exc:
        module.fail_json(msg=f"lab network: {exc}")


if __name__ == "__main__":
    main()
