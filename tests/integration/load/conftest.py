"""Fixtures of the Locust integration tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support.servers import ManagedProcess


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess | subprocess.Popen[bytes]]]:
    """Whatever a test starts, stopped at teardown whatever happened."""
    started: list[ManagedProcess | subprocess.Popen[bytes]] = []
    yield started
    for proc in reversed(started):
        if isinstance(proc, ManagedProcess):
            proc.stop()
        elif proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
