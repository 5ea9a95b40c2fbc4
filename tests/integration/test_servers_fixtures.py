"""The server fixtures themselves: each starts, answers, and (where tests need it) restarts on its port."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_kv_server_restart_keeps_port(kv_server) -> None:
    with kv_server.client() as c:
        assert c.ping()
    port = kv_server.port
    kv_server.restart()
    assert kv_server.port == port
    with kv_server.client() as c:
        assert c.ping()


def test_password_server_rejects_no_auth(server_factory) -> None:
    import redis

    server = server_factory("redis", password="s3cret")
    with server.client() as c:
        assert c.ping()
    with redis.Redis(port=server.port) as c, pytest.raises(redis.AuthenticationError):
        c.ping()


def test_nats_jetstream_up(nats_server) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{nats_server.monitor_port}/jsz", timeout=2) as resp:
        assert "config" in json.loads(resp.read())


def test_redis_cluster_has_three_masters(redis_cluster) -> None:
    with redis_cluster.nodes[0].client() as c:
        nodes = c.execute_command("CLUSTER", "NODES").decode()
    flags = [line.split()[2].split(",") for line in nodes.splitlines() if line.strip()]
    assert sum("master" in f for f in flags) == 3
    assert sum("slave" in f for f in flags) == 3


def test_nats_cluster_forms(nats_cluster_servers) -> None:
    import json
    import urllib.request

    first = nats_cluster_servers[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{first.monitor_port}/routez", timeout=2) as resp:
        assert json.loads(resp.read())["num_routes"] >= 2
