"""Verify a standalone NATS server from Debian's package (2.9.10) on a lab host."""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.request
from pathlib import Path

import nats
import pytest

from tests.support.molecule_kv import assert_secrets_private

ADDRESS = "198.18.21.21"


def _secret(user: str) -> str:
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / f"nats_{user}").read_text().strip()


def _http(path: str) -> dict:
    with urllib.request.urlopen(f"http://{ADDRESS}:8222{path}", timeout=5) as resp:
        return json.load(resp)


def test_service(host):
    service = host.service("nats-server")
    if not service.is_running:
        print(host.check_output("journalctl -u nats-server --no-pager -n 50"))
    assert service.is_running and service.is_enabled
    assert service.systemd_properties["FragmentPath"] == "/etc/systemd/system/nats-server.service"
    assert service.systemd_properties["KillSignal"] == "12"  # SIGUSR2: lame-duck mode on stop
    assert service.systemd_properties["ProtectSystem"] == "strict"
    assert service.systemd_properties["LimitNOFILE"] == "65536"
    assert service.systemd_properties["User"] == "nats"


def test_user_and_dirs(host):
    user = host.user("nats")
    assert user.shell == "/usr/sbin/nologin" and user.home == "/var/lib/nats"
    store = host.file("/var/lib/nats")
    assert store.is_directory and store.user == "nats" and store.mode == 0o750
    conf = host.file("/etc/nats/nats-server.conf")
    assert conf.user == "root" and conf.group == "nats" and conf.mode == 0o640


def test_ports(host):
    assert host.socket("tcp://0.0.0.0:4222").is_listening
    # monitoring has no auth: it listens on the testbed address only
    assert host.socket(f"tcp://{ADDRESS}:8222").is_listening
    assert not host.socket("tcp://0.0.0.0:8222").is_listening


def test_config_on_debian_2_9(host):
    conf = host.file("/etc/nats/nats-server.conf").content_string
    assert "Ansible managed" in conf
    assert 'store_dir: "/var/lib/nats"' in conf and "max_memory_store: 256MB" in conf
    assert not re.search(r"^\s*sync_interval:", conf, re.M)  # 2.9.10 refuses the key
    assert "cluster {" not in conf
    assert host.run("nats-server -t -c /etc/nats/nats-server.conf").rc == 0


def test_local_fact(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/nats.fact").content_string)
    assert fact["version"] == "2.9.10" and fact["install_method"] == "apt"
    assert fact["sync_interval_supported"] is False


def test_jetstream_standalone():
    assert _http("/healthz")["status"] == "ok"
    jsz = _http("/jsz")
    assert jsz["config"]["store_dir"].startswith("/var/lib/nats")
    assert _http("/varz")["version"] == "2.9.10"


def test_auth_required_and_user_can_publish():
    async def probe() -> None:
        for url in (f"nats://{ADDRESS}:4222", f"nats://app:wrong@{ADDRESS}:4222"):
            with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                await nats.connect(url, allow_reconnect=False, connect_timeout=3, max_reconnect_attempts=0)
        nc = await nats.connect(f"nats://app:{_secret('app')}@{ADDRESS}:4222", allow_reconnect=False)
        js = nc.jetstream()
        await js.add_stream(name="MOLECULE", subjects=["molecule.>"])
        ack = await js.publish("molecule.x", b"1")
        assert ack.stream == "MOLECULE"
        await js.delete_stream("MOLECULE")
        await nc.close()

    asyncio.run(probe())


def test_secrets_are_private():
    """The generated passwords (secrets/nats_<user>) are 0600 in a 0700 dir on the controller."""
    assert_secrets_private()
