#!/usr/bin/python
"""A helper daemon of the lab on the controller, tracked by PID file (started once, stopped on down)."""

from __future__ import annotations

import os
import subprocess
import time

DOCUMENTATION = r"""
module: lab_daemon
short_description: Start or stop a detached controller-side daemon tracked by a PID file
options:
  argv: {type: list, elements: str, default: [], description: Command (it must not fork when told so).}
  pidfile: {type: path, required: true, description: PID file the module writes.}
  needle: {type: str, required: true, description: Text the process's command line contains.}
  config: {type: str, default: "", description: Configuration file content; a change restarts the daemon.}
  config_path: {type: path, default: "", description: Where config is written.}
  log: {type: path, default: /dev/null, description: Where its output goes.}
  state: {type: str, choices: [started, stopped], default: started, description: Wanted state.}
"""


def main():
    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.lab_runtime import pid_alive, read_pid, terminate, write_if_changed

    module = AnsibleModule(argument_spec=dict(
        argv=dict(type="list", elements="str", default=[]),
        pidfile=dict(type="path", required=True),
        needle=dict(type="str", required=True),
        config=dict(type="str", default=""),
        config_path=dict(type="path", default=""),
        log=dict(type="path", default="/dev/null"),
        state=dict(type="str", choices=["started", "stopped"], default="started"),
    ))
    p = module.params
    pid = read_pid(p["pidfile"])
    alive = pid_alive(pid, p["needle"])
    if p["state"] == "stopped":
        if alive and not terminate(pid, p["needle"], timeout=5.0):
            module.fail_json(msg="lab daemon %s (pid %d) did not stop" % (p["needle"], pid))
        if os.path.exists(p["pidfile"]):
            os.remove(p["pidfile"])
        module.exit_json(changed=alive)
    config_changed = bool(p["config_path"]) and write_if_changed(p["config_path"], p["config"])
    if alive and config_changed and not terminate(pid, p["needle"], timeout=5.0):
        module.fail_json(msg="lab daemon %s (pid %d) did not stop for its new config" % (p["needle"], pid))
    if alive and not config_changed:
        module.exit_json(changed=False, pid=pid)
    if not p["argv"]:
        module.fail_json(msg="lab_daemon: argv is required to start {}".format(p["needle"]))
    with open(p["log"], "ab") as log:
        proc = subprocess.Popen(p["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    time.sleep(0.3)
    if proc.poll() is not None:
        module.fail_json(msg="lab daemon %s exited at start (rc=%d); see %s" % (p["needle"], proc.returncode, p["log"]))
    with open(p["pidfile"], "w") as handle:
        handle.write("%d\n" % proc.pid)
    module.exit_json(changed=True, pid=proc.pid)


if __name__ == "__main__":
    main()
