"""The CLI's callback turns Ansible's wrapped failures into the module's own one line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tests.support.plugins import load_plugin

ROOT = Path(__file__).resolve().parents[2]


callback = load_plugin("plugins/callback/kvtestbed.py", "kvtestbed_callback")


def result(**res):
    return SimpleNamespace(_result=res)


def test_unwraps_module_failure():
    msg = "Task failed: Module failed: invalid lab inventory: host pi-1: no address; set ansible_host"
    assert callback._message(result(msg=msg)) == "invalid lab inventory: host pi-1: no address; set ansible_host"


def test_first_line_of_multiline_stderr():
    assert callback._message(result(stderr="\n  first problem\nsecond\n")) == "first problem"


def test_loop_item_failure():
    assert callback._message(result(results=[{"failed": False}, {"failed": True, "msg": "item broke"}])) == \
        "item broke"


def test_command_failure_prefers_its_stderr():
    assert callback._message(result(rc=1, msg="non-zero return code", stderr="nft: syntax error\n")) == \
        "nft: syntax error"
