#!/usr/bin/python
"""Ansible wrapper of kvtestbed.lab.hosts: boot (or remove) the emulated hosts of the lab."""

from __future__ import annotations

import os
import sys

from ansible.module_utils.basic import AnsibleModule

try:
    from kvtestbed.lab.hosts import Lab, apply, ensure_key, write_status
    from kvtestbed.lab.runtime import LabError
except ImportError:  # the lab's plays run the controller's venv python, where kvtestbed is installed
    Lab = None

DOCUMENTATION = r"""
module: lab_hosts
short_description: Boot (or remove) the emulated hosts of the lab with systemd-nspawn, in parallel
description:
  - Each host is an overlay root on the base image, booted with systemd as PID 1, a static address on the
    lab bridge, its hardware profile's memory and CPU limits (cgroups) and tbf link shaping.
  - Hosts found in hosts_dir but not listed are removed, so the inventory stays the single source of truth.
  - Runs kvtestbed.lab.hosts, so it needs the controller's python (ansible_python_interpreter set to
    ansible_playbook_python).
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
  foreign_images: {type: dict, default: {}, description: "Images of foreign architectures (lab_image's foreign): a host whose userland is one boots on it under QEMU user emulation."}
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

NO_KVTESTBED = ("kvtestbed is not importable by %s: run the lab's plays with "
                "ansible_python_interpreter set to ansible_playbook_python (the project's venv)")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            hosts=dict(type="list", elements="dict", default=[]),
            prefix=dict(type="int", default=24),
            gateway=dict(type="str", default=""),
            bridge=dict(type="str", default=""),
            image=dict(type="path", default=""),
            image_id=dict(type="str", default=""),
            foreign_images=dict(type="dict", default={}),
            hosts_dir=dict(type="path", required=True),
            ssh_key=dict(type="path", default=""),
            boot_timeout=dict(type="int", default=60),
            runtime=dict(type="str", choices=["auto", "systemd", "detached"], default="auto"),
            status_file=dict(type="path", default=""),
            status_extra=dict(type="dict", default={}),
            state=dict(type="str", choices=["running", "absent"], default="running"),
        ),
    )
    if Lab is None:
        module.fail_json(msg=NO_KVTESTBED % sys.executable)
    p = module.params
    running = p["state"] == "running"
    lab = Lab(hosts_dir=p["hosts_dir"], prefix=p["prefix"], gateway=p["gateway"], bridge=p["bridge"],
              image=p["image"], image_id=p["image_id"], boot_timeout=p["boot_timeout"], runtime=p["runtime"],
              foreign_images=p["foreign_images"])
    if running:
        missing = [key for key in ("image", "gateway", "bridge", "ssh_key") if not p[key]]
        if missing:
            module.fail_json(msg="lab_hosts: {} required when state is running".format(", ".join(missing)))
        try:
            lab.ssh_pubkey = ensure_key(p["ssh_key"])
        except (LabError, OSError) as exc:
            module.fail_json(msg=f"lab SSH key: {exc}")
        os.makedirs(p["hosts_dir"], mode=0o700, exist_ok=True)
    changed, results, errors = apply(lab, p["hosts"] if running else [])
    if errors:
        module.fail_json(msg="; ".join(sorted(errors)), hosts=results)
    if p["status_file"] and running:
        changed |= write_status(p["status_file"], p["hosts"], results, p["status_extra"])
    module.exit_json(changed=changed, hosts=results)


if __name__ == "__main__":
    main()
