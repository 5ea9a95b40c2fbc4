#!/usr/bin/python
"""Ansible wrapper of kvtestbed.lab.daemon: a controller-side helper daemon of the lab, tracked by PID file."""

from __future__ import annotations

import sys

from ansible.module_utils.basic import AnsibleModule

try:
    from kvtestbed.lab.daemon import Daemon, ensure_started, stop
    from kvtestbed.lab.runtime import LabError
except ImportError:  # the lab's plays run the controller's venv python, where kvtestbed is installed
    Daemon = None

DOCUMENTATION = r"""
module: lab_daemon
short_description: Start or stop a detached controller-side daemon tracked by a PID file
description:
  - Runs kvtestbed.lab.daemon, so it needs the controller's python (ansible_python_interpreter set to
    ansible_playbook_python).
options:
  argv: {type: list, elements: str, default: [], description: Command (it must not fork when told so).}
  pidfile: {type: path, required: true, description: PID file the module writes.}
  needle: {type: str, required: true, description: Text the process's command line contains.}
  config: {type: str, default: "", description: Configuration file content; a change restarts the daemon.}
  config_path: {type: path, default: "", description: Where config is written.}
  log: {type: path, default: /dev/null, description: Where its output goes.}
  state: {type: str, choices: [started, stopped], default: started, description: Wanted state.}
"""

NO_KVTESTBED = ("kvtestbed is not importable by %s: run the lab's plays with "
                "ansible_python_interpreter set to ansible_playbook_python (the project's venv)")


def main():
    module = AnsibleModule(argument_spec=dict(
        argv=dict(type="list", elements="str", default=[]),
        pidfile=dict(type="path", required=True),
        needle=dict(type="str", required=True),
        config=dict(type="str", default=""),
        config_path=dict(type="path", default=""),
        log=dict(type="path", default="/dev/null"),
        state=dict(type="str", choices=["started", "stopped"], default="started"),
    ))
    if Daemon is None:
        module.fail_json(msg=NO_KVTESTBED % sys.executable)
    p = module.params
    daemon = Daemon(pidfile=p["pidfile"], needle=p["needle"], argv=p["argv"], config=p["config"],
                    config_path=p["config_path"], log=p["log"])
    try:
        if p["state"] == "stopped":
            module.exit_json(changed=stop(daemon))
        changed, pid = ensure_started(daemon)
    except (LabError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, pid=pid)


if __name__ == "__main__":
    main()
