"""Compact output for the kvtestbed CLI: a line per changed or failed host and task, the first error kept.

The CLI sets KVTESTBED_ERROR_FILE; the first failure is written there as JSON (host, task, msg, input_error)
so the CLI can end with one clear line. A failure in a task tagged *preflight is bad input (exit 2).
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: kvtestbed
type: stdout
short_description: one line per changed or failed task and host; the first error kept for the CLI
description: Used by the kvtestbed CLI (ANSIBLE_STDOUT_CALLBACK=kvtestbed).
"""


def _one_line(text):
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else "failed"


def _message(result):
    res = result._result
    # a command's own words say more than Ansible's "non-zero return code"
    keys = ("msg", "stderr", "module_stderr", "stdout")
    if res.get("rc"):
        keys = ("stderr", "msg", "module_stderr", "stdout")
    for key in keys:
        value = res.get(key)
        if value:
            text = _one_line(value)
            # ansible-core 2.19 wraps module messages; the module's own words are what the user needs
            for prefix in ("Task failed: Module failed: ", "Task failed: Action failed: ", "Task failed: "):
                if text.startswith(prefix):
                    text = text[len(prefix):]
            return text
    for item in res.get("results", []) or []:
        if item.get("failed"):
            return _one_line(item.get("msg", "failed"))
    return "failed"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "kvtestbed"

    def __init__(self):
        super().__init__()
        self._task = None
        self._task_started = 0.0
        self._error_written = False
        self._started = time.monotonic()

    def _emit(self, status, host, task_name, detail=""):
        elapsed = time.monotonic() - self._started
        line = "%6.1fs  %-11s %-8s %s" % (elapsed, status, host, task_name)
        if detail:
            line += ": " + detail
        self._display.display(line)

    def _record_error(self, result, unreachable=False):
        if self._error_written:
            return
        path = os.environ.get("KVTESTBED_ERROR_FILE")
        if not path:
            return
        task = result._task
        tags = set(getattr(task, "tags", []) or [])
        host = result._host.get_name()
        msg = _message(result)
        input_error = any(tag.endswith("preflight") for tag in tags)
        if unreachable:
            address = result._host.vars.get("ansible_host", host)
            msg = f"host {host} ({address}) does not answer over SSH: {msg}"
        elif not input_error and host != "localhost":
            msg = f"{host}: {task.get_name()}: {msg}"
        with open(path, "w") as handle:
            json.dump({"host": host, "task": task.get_name(), "msg": msg, "input_error": input_error}, handle)
        self._error_written = True

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task = task.get_name()

    def v2_playbook_on_handler_task_start(self, task):
        self._task = "handler: " + task.get_name()

    def v2_runner_on_ok(self, result):
        if result._result.get("changed"):
            self._emit("changed", result._host.get_name(), result._task.get_name())

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors:
            return
        self._emit("FAILED", result._host.get_name(), result._task.get_name(), _message(result))
        self._record_error(result)

    def v2_runner_on_unreachable(self, result):
        self._emit("UNREACHABLE", result._host.get_name(), result._task.get_name(), _message(result))
        self._record_error(result, unreachable=True)

    def v2_playbook_on_play_start(self, play):
        self._emit("play", "-", play.get_name())

    def v2_playbook_on_stats(self, stats):
        for host in sorted(stats.processed):
            summary = stats.summarize(host)
            self._display.display("%-10s ok=%d changed=%d failed=%d unreachable=%d skipped=%d" % (
                host, summary["ok"], summary["changed"], summary["failures"], summary["unreachable"],
                summary["skipped"]))
