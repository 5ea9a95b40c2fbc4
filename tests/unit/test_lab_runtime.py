"""Every command of the lab runtime is bounded: a hang ends in one line naming the command, never a traceback."""

from __future__ import annotations

import os
import time

import pytest

from kvtestbed.lab.runtime import LabError, pid_alive, run
from tests.support.wait import settle


def test_a_hung_command_ends_in_one_line_naming_it():
    started = time.monotonic()
    with pytest.raises(LabError) as caught:
        run(["sleep", "5"], timeout=0.2)
    assert time.monotonic() - started < 3.0
    assert str(caught.value) == "sleep 5 timed out after 0.2 s"


def test_a_timeout_kills_what_the_command_started(tmp_path):
    """debootstrap and chroot start children of their own: those must not outlive the timeout either."""
    pidfile = tmp_path / "child.pid"
    with pytest.raises(LabError, match="timed out"):
        run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    child = int(pidfile.read_text())
    # SIGKILL is delivered, then the process reaped
    assert not settle(lambda: pid_alive(child), lambda alive: not alive, timeout_s=5.0, interval_s=0.05)


def test_a_failing_command_names_itself_and_its_last_error_line():
    with pytest.raises(LabError) as caught:
        run(["sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3"])
    assert str(caught.value) == "sh -c echo first >&2; echo 'the reason' >&2; exit 3 failed: the reason"
    assert run(["sh", "-c", "exit 3"], check=False)[0] == 3


def test_a_missing_command_is_one_line():
    with pytest.raises(LabError) as caught:
        run(["kvtestbed-no-such-command", "--flag"])
    assert str(caught.value) == "kvtestbed-no-such-command --flag: No such file or directory"


def test_input_and_output():
    assert run(["cat"], input_text="hello\n") == (0, "hello\n", "")


def test_long_arguments_are_shortened_in_messages():
    with pytest.raises(LabError) as caught:
        run(["sh", "-c", "exit 1", "x" * 200, "more", "args"])
    message = str(caught.value)
    assert len(message) < 120 and message.endswith(" ... failed: rc=1"), message
    assert os.linesep not in message
