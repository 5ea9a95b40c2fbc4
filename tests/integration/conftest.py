"""Fixtures that start REAL servers on free loopback ports (see servers.py); every one is reaped."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.agentproc import AgentProcess
from tests.support.binaries import require
from tests.support.servers import (
    NatsServer,
    RedisCluster,
    RedisServer,
    SentinelServer,
    SentinelSet,
    TlsFiles,
    build_redis_cluster,
    keydb_server_binary,
    link_mesh,
    nats_cluster,
    nats_server_binary,
    wait_replica_in_sync,
)

REDIS_BIN = shutil.which("redis-server")
VALKEY_BIN = shutil.which("valkey-server") or (
    "/usr/bin/valkey-server" if Path("/usr/bin/valkey-server").exists() else None
)
REDIS_CLI = shutil.which("redis-cli")
KEYDB_BIN = keydb_server_binary()


def _need(binary: str | None, what: str) -> str:
    return require(binary, what)  # skips here, fails under CI=true


ServerFactory = Callable[..., RedisServer]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """make(engine='redis'|'valkey'|'keydb', password=None, extra=(), tls=None) -> a started server (also on a TLS port
    with `tls`, see make_test_ca); all stopped at teardown."""
    made: list[RedisServer] = []

    def make(
        engine: str = "redis", password: str | None = None, extra: tuple[str, ...] = (), tls: TlsFiles | None = None
    ) -> RedisServer:
        if engine == "keydb":
            binary = require(KEYDB_BIN, "keydb-server", "make keydb builds it from the vendored KeyDB archive")
        else:
            binary = _need(REDIS_BIN if engine == "redis" else VALKEY_BIN, f"{engine}-server")
        server = RedisServer(binary, tmp_path / f"{engine}{len(made)}", password=password, extra=extra, tls=tls)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def sentinel_set(server_factory: ServerFactory, tmp_path: Path) -> Iterator[Callable[..., SentinelSet]]:
    """make(extra=()) -> a primary, a replica in sync and a Sentinel (master name "kvt"); `extra` goes to
    both servers. Sentinels are stopped at teardown, the servers with server_factory's."""
    sentinels: list[SentinelServer] = []

    def make(extra: tuple[str, ...] = ()) -> SentinelSet:
        primary = server_factory("redis", extra=extra)
        replica = server_factory(
            "redis",
            extra=(*extra, "--replicaof", primary.host, str(primary.port), "--repl-diskless-sync-delay", "0"),
        )
        sentinel = SentinelServer(primary.argv[0], tmp_path / f"sentinel{len(sentinels)}", "kvt", primary.port)
        sentinels.append(sentinel)
        wait_replica_in_sync(replica)
        sentinel.start()
        return SentinelSet(primary, replica, sentinel)

    yield make
    for sentinel in sentinels:
        sentinel.stop()


@pytest.fixture
def redis_server(server_factory: ServerFactory) -> RedisServer:
    return server_factory("redis")


@pytest.fixture
def valkey_server(server_factory: ServerFactory) -> RedisServer:
    return server_factory("valkey")


@pytest.fixture(params=["redis", "valkey"])
def kv_server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> RedisServer:
    """The same test against redis-server 7.0 and valkey-server 8.0."""
    return server_factory(request.param)


@pytest.fixture
def keydb_mesh(server_factory: ServerFactory) -> Callable[..., list[RedisServer]]:
    """make(peers=3, extra=()) -> KeyDB peers in an active-replica mesh (multi-master: each replicates from every
    other), all links up. KeyDB built by `make keydb` (the vendored archive) or on PATH."""

    def make(peers: int = 3, extra: tuple[str, ...] = ()) -> list[RedisServer]:
        servers = [
            server_factory("keydb", extra=("--active-replica", "yes", "--multi-master", "yes", *extra))
            for _ in range(peers)
        ]
        link_mesh(servers)
        return servers

    return make


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    binary = _need(nats_server_binary(), "nats-server")
    server = NatsServer(binary, tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """3 masters + 3 replicas (redis-cli --cluster create --cluster-replicas 1), shared by the session."""
    binary = _need(REDIS_BIN, "redis-server")
    cli = _need(REDIS_CLI, "redis-cli")
    cluster = build_redis_cluster(binary, cli, tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def nats_cluster_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NatsServer]]:
    """Three JetStream nodes routed into one cluster, shared by the session."""
    binary = _need(nats_server_binary(), "nats-server")
    with nats_cluster(binary, tmp_path_factory.mktemp("nats-cluster")) as servers:
        yield servers


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """start(kind, config, name=None, env=None) -> a running agent process; all killed at teardown."""
    started: list[AgentProcess] = []

    def start(
        kind: str, config: dict[str, object], name: str | None = None, env: dict[str, str] | None = None
    ) -> AgentProcess:
        agent = AgentProcess(kind, config, tmp_path / "agents", name=name)
        started.append(agent)
        return agent.start(env=env)

    yield start
    for agent in started:
        agent.kill()
