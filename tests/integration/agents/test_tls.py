"""Agents over TLS to a real redis-server / nats-server whose certificate the testbed's own CA signed.

`tls_ca_file` names that CA: with it the agents verify the server and connect; with another CA (or none,
i.e. the system trust store) the start fails with one line and exit 2.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kvagent.clients.connect import ConnectError, connect_nats
from kvagent.service.config import NatsEndpoint

from tests.support.binaries import require
from tests.support.servers import NatsServer, TlsFiles, free_port, make_test_ca, nats_server_binary

pytestmark = pytest.mark.integration


@pytest.fixture
def cas(tmp_path: Path) -> tuple[TlsFiles, TlsFiles]:
    """(the CA that signed the servers' certificates, an unrelated CA)."""
    return make_test_ca(tmp_path / "ca", "testbed"), make_test_ca(tmp_path / "other", "other")


def _run(kind: str, config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = {**config, "service": {"metrics_port": free_port()}}
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "kvagent.main", kind, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ),
    )


def test_streams_and_observer_verify_the_testbed_ca(server_factory, agents, cas) -> None:
    good, _other = cas
    server = server_factory("redis", tls=good)
    endpoint = server.tls_endpoint(good.ca_cert)
    streams = agents(
        "streams",
        {
            "redis": endpoint,
            "streams": {"request_stream": "tls:req", "response_prefix": "tls:resp:", "group": "g"},
            "ingress": {"rate": 200, "requests": 100},
            "worker": {"consumers": 2},
        },
        name="streams",
    )
    # The observer's writer and async listener use their own hiredis connections (another TLS code path),
    # the sync listener redis-py.
    observer = agents("observer", {"writer": {"endpoint": endpoint, "rate": 200, "count": 100}}, name="observer")
    done = streams.wait_for(lambda s: s["issued_all"] and s["in_flight"] == 0, 30, "every request answered")
    assert done["completed"] == 100 and done["lost"] == 0, done
    observed = observer.wait_for(
        lambda s: s["writer"]["writes"] == 100 and all(lst["notifications"] == 100 for lst in s["listeners"].values()),
        30,
        "every write observed over TLS",
    )
    assert observed["writer"]["write_errors"] == 0
    # Both talked to the TLS port only (a plaintext client gets no reply there), and stop cleanly.
    streams.stop()
    observer.stop()


@pytest.mark.parametrize("kind", ["streams", "observer"])
@pytest.mark.parametrize("ca", ["other", "system"])
def test_a_server_signed_by_another_ca_is_refused_with_one_line(
    tmp_path: Path, server_factory, cas, kind: str, ca: str
) -> None:
    good, other = cas
    server = server_factory("redis", tls=good)
    endpoint = server.tls_endpoint(other.ca_cert if ca == "other" else None)
    config = {"redis": endpoint} if kind == "streams" else {"writer": {"endpoint": endpoint}}
    proc = _run(kind, config, tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert f"kvagent {kind}: redis 127.0.0.1:{server.tls_port}: TLS verification failed" in lines[0], lines[0]
    assert (str(other.ca_cert) if ca == "other" else "system trust store") in lines[0], lines[0]


def test_nats_verifies_the_testbed_ca(tmp_path: Path, cas) -> None:
    good, other = cas
    binary = require(nats_server_binary(), "nats-server")
    server = NatsServer(binary, tmp_path / "nats-tls", name="nats-tls", tls=good)
    server.start()
    try:

        async def connect(ca: Path) -> None:
            nc = await connect_nats(NatsEndpoint([f"tls://127.0.0.1:{server.port}"], tls_ca_file=str(ca)))
            try:
                await nc.flush(timeout=5)  # a round trip over the verified connection
            finally:
                await nc.close()

        asyncio.run(connect(good.ca_cert))
        with pytest.raises(ConnectError) as info:
            asyncio.run(connect(other.ca_cert))
        message = str(info.value)
        assert "\n" not in message and "TLS verification failed" in message, message
    finally:
        server.stop()
