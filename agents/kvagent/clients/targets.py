"""Which Redis nodes an agent talks to: a fixed list, the master named by Sentinel, or a Cluster's masters.

Keyspace events are node-local and only masters publish `expired`, so the set of nodes to subscribe to
changes on failover; resolvers are asked again every ``refresh_s`` and the subscriber set follows.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from kvagent.clients.connect import redis_kwargs, tls_kwargs
from kvagent.clients.sentinel import master_endpoint, sentinel_manager
from kvagent.service.config import ConfigError, RedisEndpoint


@dataclass
class TargetSettings:
    """Where the keys live.

    mode nodes:    ``nodes`` are every node to subscribe to (a standalone server, or every KeyDB peer);
                   writes go to the first one.
    mode sentinel: ``sentinels`` are asked for ``master_name``; the master gets writes and subscriptions.
    mode cluster:  ``nodes`` are startup nodes; every master found by CLUSTER NODES is subscribed.
    ``password``/``username`` authenticate to discovered nodes (sentinel and cluster modes); they
    default to the first entry of ``nodes``.
    """

    mode: Literal["nodes", "sentinel", "cluster"] = "nodes"
    nodes: list[RedisEndpoint] = field(default_factory=list)
    sentinels: list[RedisEndpoint] = field(default_factory=list)
    master_name: str = "mymaster"
    password: str | None = None
    username: str | None = None
    db: int = 0
    refresh_s: float = 1.0

    def __post_init__(self) -> None:
        if self.mode in ("nodes", "cluster") and not self.nodes:
            raise ConfigError(f"target.nodes must list at least one node in mode {self.mode}")
        if self.mode == "sentinel" and not self.sentinels:
            raise ConfigError("target.sentinels must list at least one Sentinel in mode sentinel")
        if self.mode == "cluster" and self.db != 0:
            raise ConfigError("target.db must be 0 in mode cluster (Redis Cluster has only db 0)")
        if self.refresh_s <= 0:
            raise ConfigError("target.refresh_s must be > 0")

    def node(self, host: str, port: int) -> RedisEndpoint:
        """An endpoint for a discovered node, with this target's credentials and db."""
        base = self.nodes[0] if self.nodes else None
        return RedisEndpoint(
            host=host,
            port=port,
            password=self.password if self.password is not None else (base.password if base else None),
            username=self.username if self.username is not None else (base.username if base else None),
            tls=base.tls if base else False,
            tls_ca_file=base.tls_ca_file if base else None,
            db=self.db,
        )


class Resolver(Protocol):
    async def resolve(self) -> list[RedisEndpoint]:
        """The nodes that own keys now; raises the builtin ConnectionError when nobody can tell."""
        ...


def node_client(ep: RedisEndpoint, timeout_s: float = 2.0) -> aioredis.Redis:
    # A short-lived, non-retrying client: resolvers are polled and must not hang on a dead node.
    return aioredis.Redis(
        **redis_kwargs(
            ep,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # No redis-py retries: the caller decides (and counts) what a failure means.
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
    )


class StaticResolver:
    def __init__(self, settings: TargetSettings) -> None:
        self._nodes = [dataclasses.replace(n, db=settings.db) for n in settings.nodes]

    async def resolve(self) -> list[RedisEndpoint]:
        return list(self._nodes)


class SentinelResolver:
    """The master Sentinel names now, asked through redis-py's Sentinel (discover_master)."""

    def __init__(self, settings: TargetSettings) -> None:
        self._settings = settings
        self._manager: Sentinel | None = None  # made on first use, inside the agent's event loop

    async def resolve(self) -> list[RedisEndpoint]:
        if self._manager is None:
            self._manager = sentinel_manager(self._settings.sentinels)
        template = self._settings.node("", 1)
        return [await master_endpoint(self._manager, self._settings.master_name, template)]


def parse_cluster_masters(text: str) -> list[tuple[str, int]]:
    """(host, port) of healthy masters from CLUSTER NODES output."""
    masters = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        flags = parts[2].split(",")
        if "master" not in flags or "fail" in flags or "noaddr" in flags or "handshake" in flags:
            continue
        # ip:port@cport[,hostname]
        addr = parts[1].split("@", 1)[0]
        host, _, port = addr.rpartition(":")
        if host and port.isdigit() and int(port) > 0:
            masters.append((host, int(port)))
    return sorted(masters)


class ClusterResolver:
    """Reads CLUSTER NODES from any reachable node (configured or last discovered)."""

    def __init__(self, settings: TargetSettings) -> None:
        self._settings = settings
        self._known: list[RedisEndpoint] = list(settings.nodes)

    async def resolve(self) -> list[RedisEndpoint]:
        errors: list[str] = []
        for node in list(self._known):
            client = node_client(node)
            try:
                text = await client.execute_command("CLUSTER", "NODES")
            except (aioredis.RedisError, OSError) as exc:
                errors.append(f"{node.label()}: {exc}")
                continue
            finally:
                await client.aclose()
            masters = [self._settings.node(h, p) for h, p in parse_cluster_masters(text)]
            if masters:
                # Remember discovered masters too, so losing every startup node does not blind us.
                seen = {n.label() for n in self._settings.nodes}
                self._known = list(self._settings.nodes) + [m for m in masters if m.label() not in seen]
                return masters
        raise ConnectionError("no cluster node answered: " + "; ".join(errors))


def make_resolver(settings: TargetSettings) -> Resolver:
    if settings.mode == "sentinel":
        return SentinelResolver(settings)
    if settings.mode == "cluster":
        return ClusterResolver(settings)
    return StaticResolver(settings)


def cluster_client(settings: TargetSettings, timeout_s: float = 2.0) -> RedisCluster:
    """A redis-py cluster client for writes (it follows MOVED/ASK and refreshes its slot map)."""
    first = settings.nodes[0]
    return RedisCluster(
        startup_nodes=[ClusterNode(n.host, n.port) for n in settings.nodes],
        username=settings.username if settings.username is not None else first.username,
        password=settings.password if settings.password is not None else first.password,
        **tls_kwargs(first),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )


async def close_quietly(client: aioredis.Redis | RedisCluster | None) -> None:
    if client is None:
        return
    with contextlib.suppress(Exception):
        await client.aclose()
