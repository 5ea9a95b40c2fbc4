"""Lab tests bring up labs of their own (own lab_name, bridge and subnet) and always take them down; test_default_lab.py
uses the shipped default lab (no other test does) and leaves one it found up as it was."""

from __future__ import annotations

import os

import pytest

from tests.support.binaries import unavailable


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session", autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        unavailable("lab tests need root (bridge, nftables, systemd-nspawn)")
