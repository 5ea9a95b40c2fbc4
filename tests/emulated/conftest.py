"""Builds under QEMU user emulation: too slow for `make test`, run by their own make targets (make keydb-arm64)."""

from __future__ import annotations

import os

import pytest

from tests.support.binaries import unavailable


@pytest.fixture(scope="session", autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        unavailable("these tests bring up a lab: they need root (bridge, nftables, systemd-nspawn)")
