"""Per Locust process and target: N shared connections, handed to users round-robin.

The pools live on the Locust environment (`environment.kvt_pools`), never in a module global: every user of a
process shares them, separate environments (tests, a second runner) do not, and the run's end closes them
(test_stop fires after every user has stopped, so no request is cut off). A run started again from the web UI
opens new ones.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

from kvload.resp.cluster import ClusterClient
from kvload.resp.connection import Arg, Connection, ConnectSettings
from kvload.resp.sentinel import SentinelResolver, master_connection
from kvload.resp.target import Target


class Client(Protocol):
    """What a user talks to: a Connection (standalone, Sentinel) or a ClusterHandle (routes by key)."""

    def send(self, key: bytes | None, packed: bytes) -> Any: ...

    def send_many(self, keys: Any, packed: Any) -> list[Any]: ...

    def call(self, *args: Arg) -> Any: ...


class Pool:
    def __init__(
        self, target: Target, settings: ConnectSettings, size: int, sentinel_password: str | None = None
    ) -> None:
        self.target = target
        self.size = max(size, 1)
        self.cluster: ClusterClient | None = None
        self.connections: list[Connection] = []
        if target.kind == "cluster":
            self.cluster = ClusterClient(target.nodes, settings, self.size)
            self._clients: list[Any] = [self.cluster.handle(i) for i in range(self.size)]
        elif target.kind == "sentinel":
            assert target.master_name is not None
            resolver = SentinelResolver(target.nodes, target.master_name, settings, sentinel_password)
            self.connections = [master_connection(resolver, settings) for _ in range(self.size)]
            self._clients = list(self.connections)
        else:
            self.connections = [Connection(target.nodes[0], settings) for _ in range(self.size)]
            self._clients = list(self.connections)
        self._next = itertools.cycle(self._clients)

    def client(self) -> Client:
        """The next shared client, round-robin: user k gets connection k mod N."""
        return next(self._next)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
        for conn in self.connections:
            conn.close()


def pool_for(
    environment: Any,
    key: tuple[Any, ...],
    target: Target,
    settings: ConnectSettings,
    size: int,
    sentinel_password: str | None = None,
) -> Pool:
    """The environment's pool for `key` (target, credentials source, size...), made on first use."""
    pools: dict[tuple[Any, ...], Pool] | None = getattr(environment, "kvt_pools", None)
    if pools is None:
        pools = environment.kvt_pools = {}

        def close_all(**_: Any) -> None:
            for pool in pools.values():
                pool.close()
            pools.clear()

        environment.events.test_stop.add_listener(close_all)
    pool = pools.get(key)
    if pool is None:
        pool = pools[key] = Pool(target, settings, size, sentinel_password)
    return pool
