"""KeyDB's aarch64 build from the vendored archive, the way the kvstore role builds for a kind of host the controller
is not: on the first host of that kind (here a pi4b-arm64 lab host, Debian arm64 under QEMU user emulation), with
the build packages installed there, the bundle fetched back into the controller's cache
(keydb-<version>-bookworm-aarch64.tar.gz) and unpacked on every host of the kind, whose server must start.

Not part of `make test`: compiling under emulation takes tens of minutes (its time goes in the closing note). Run
it with `make keydb-arm64` (root, qemu-user-static, ../shared/vendor/KeyDB-<version>.tar.gz).

A lab of its own (lab_name kb64lab, 198.18.94.0/24, one host kb64-1 with two controller CPUs, as the build's -j2
wants). The controller's cached aarch64 bundle is moved aside first, so the build really runs, and put back after.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import redis

from tests.support.binaries import unavailable
from tests.support.lab import ROOT, kvtestbed, lab_vars, ssh

LAB = "kb64lab"
SUBNET = "198.18.94"
HOST = f"{SUBNET}.11"
KEY = f"/var/lib/kvtestbed/lab/{LAB}/ssh/id_ed25519"
VERSION = "6.3.4"
ARCHIVE = ROOT.parent / "shared" / "vendor" / f"KeyDB-{VERSION}.tar.gz"
CACHE = Path.home() / ".cache" / "kvtestbed" / "keydb"
BUNDLE = CACHE / f"keydb-{VERSION}-bookworm-aarch64.tar.gz"

INVENTORY = """---
all:
  hosts:
    kb64-1: {{ansible_host: {host}, lab_profile: arm64-builder, common_firewall_enabled: false}}
  children:
    keydb:
      hosts: {{kb64-1: }}
      vars:
        keydb_kvstore: {{engine: keydb, topology: standalone, ports: [6381], persistence: none,
                         keydb_install_method: source, keydb_source_archive: {archive},
                         keydb_source_checksum: "{checksum}", keydb_source_version: "{version}"}}
  vars:
{lab_vars}
    testbed_secrets_dir: {secrets}
    # the pi4b-arm64 profile with both controller CPUs: the build runs make -j2
    lab_hardware_profiles:
      arm64-builder: {{memory_mb: 4096, cpu_quota_percent: 200, link_mbit: 1000, emulates: aarch64,
                       userland: arm64}}
"""


def _checksum() -> str:
    for line in (ARCHIVE.parent / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name.strip() == ARCHIVE.name:
            return digest
    raise AssertionError(f"{ARCHIVE.name} not in SHA256SUMS")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    if not ARCHIVE.is_file():
        unavailable(f"no KeyDB source archive at {ARCHIVE}")
    if not os.path.exists("/proc/sys/fs/binfmt_misc/qemu-aarch64"):
        unavailable("needs QEMU user emulation (apt install qemu-user-static binfmt-support)")
    work = tmp_path_factory.mktemp(LAB)
    inventory = work / "inventory"
    inventory.mkdir()
    secrets = work / "secrets"
    (inventory / "hosts.yml").write_text(INVENTORY.format(
        host=HOST, lab_vars=lab_vars(LAB, SUBNET), secrets=secrets, archive=ARCHIVE, checksum=_checksum(),
        version=VERSION))
    aside = [p for p in CACHE.glob(f"keydb-{VERSION}-bookworm-aarch64*")]
    for path in aside:
        path.rename(work / path.name)
    try:
        up = kvtestbed("lab", "up", "--inventory", str(inventory), timeout=2400)
        assert up.returncode == 0, up.stderr[-3000:]
        started = time.monotonic()
        deploy = kvtestbed("deploy", "--inventory", str(inventory), timeout=3 * 3600)
        seconds = time.monotonic() - started
        assert deploy.returncode == 0, (deploy.stdout[-5000:], deploy.stderr[-3000:])
        print(f"\nKEYDB-AARCH64 deploy with the emulated build: {seconds:.0f} s")
        yield {"secrets": secrets, "deploy": deploy.stdout, "seconds": seconds}
    finally:
        kvtestbed("lab", "down", "--inventory", str(inventory), timeout=900)
        if not BUNDLE.exists():  # the build failed: the bundle the cache held before comes back
            for path in aside:
                shutil.move(str(work / path.name), str(CACHE / path.name))


def test_keydb_is_built_once_for_aarch64_and_answers_on_the_arm64_host(lab) -> None:
    assert BUNDLE.is_file(), "the aarch64 bundle was not fetched back into the controller's cache"
    manifest = (CACHE / f"keydb-{VERSION}-bookworm-aarch64.json").read_text()
    assert "aarch64" in manifest
    assert "keydb-server" in ssh(HOST, KEY, "command -v keydb-server").stdout
    assert ssh(HOST, KEY, "uname -m").stdout.strip() == "aarch64"
    password = (lab["secrets"] / "keydb-agent").read_text().strip()
    with redis.Redis(HOST, 6381, username="agent", password=password, socket_timeout=10) as client:
        server = client.info("server")
        assert str(server["os"]).endswith("aarch64") and client.ping() is True, server
