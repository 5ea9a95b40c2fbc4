"""A writer's strategy for a Redis Cluster: redis-py's `RedisCluster` keeps the slot map, each SET is sent once.

redis-py's own `execute_command` retries on its own (after a connection error, CLUSTERDOWN or TRYAGAIN it refreshes
the map and sends again), so an op's outcome would no longer be exact. Here the slot map, its refresh and the node
connections are redis-py's; the send is one attempt:
- the key's slot (`redis.crc.key_slot`) -> its master in redis-py's map -> one SET on a pooled connection;
- MOVED / ASK are the node saying "not here, nothing done": the map is patched (MOVED, as redis-py does) and the SET
  follows the redirection, at most MAX_REDIRECTS times; the op's `node` is the node that finally answered;
- fail: an error reply (CLUSTERDOWN, TRYAGAIN, NOAUTH...), no master known for the slot, or the connection could
  not be made (refused, connect timed out): the SET never left;
- unknown: timeout or connection lost after the SET was sent.
After an error that suggests the map is stale (connection errors, CLUSTERDOWN, an uncovered slot) a background
thread refreshes the map (redis-py's `NodesManager.initialize`, asking the startup nodes), at most every
`refresh_min_s`, so the writer's schedule never waits for a refresh.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from kvtestbed.accounting.strategies import AccountingError, Outcome, describe_error, read_secret

CLUSTER_STRATEGY = "cluster"
MAX_REDIRECTS = 2


@dataclass(frozen=True)
class ClusterTarget:
    """Where a Redis Cluster is (any of its nodes) and how to authenticate; timeouts are per attempt."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password_file: Path | None = None
    op_timeout_s: float = 1.0
    connect_timeout_s: float = 0.5
    refresh_min_s: float = 0.1

    def __post_init__(self) -> None:
        if not self.nodes:
            raise AccountingError("no cluster node given")
        if self.op_timeout_s <= 0 or self.connect_timeout_s <= 0 or self.refresh_min_s < 0:
            raise AccountingError("timeouts must be positive")

    def describe(self) -> str:
        return "cluster:" + ",".join(f"{host}:{port}" for host, port in self.nodes)

    def node_kwargs(self) -> dict[str, Any]:
        password = read_secret(self.password_file, "cluster node") if self.password_file else None
        return {
            "username": self.username,
            "password": password,
            "socket_timeout": self.op_timeout_s,
            "socket_connect_timeout": self.connect_timeout_s,
        }

    def op_bound_s(self) -> float:
        """The longest one op can take: a connect and a reply per node it is sent to."""
        return (MAX_REDIRECTS + 1) * (self.op_timeout_s + self.connect_timeout_s) + 1.0


def connect_cluster(target: ClusterTarget, **overrides: Any) -> RedisCluster:
    """redis-py's cluster client with no retries of its own (the map is read from the first node that answers)."""
    kwargs = {**target.node_kwargs(), **overrides}
    try:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            retry=Retry(NoBackoff(), 0),
            require_full_coverage=False,  # a map with a dead master's slots is what a failover looks like
            **kwargs,
        )
    except (RedisError, RedisClusterException) as err:
        raise AccountingError(f"{target.describe()}: no node gave the slot map ({describe_error(err)})") from None


class ClusterStrategy:
    """SET through redis-py's slot map, one attempt per op (module doc)."""

    name = CLUSTER_STRATEGY

    def __init__(self, target: ClusterTarget) -> None:
        self.target = target
        self._client = connect_cluster(target)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="cluster-refresh", daemon=True)
        self._thread.start()

    def op_bound_s(self) -> float:
        return self.target.op_bound_s()

    def set(self, key: str, value: str) -> Outcome:
        args = ("SET", key, value)
        try:
            node: ClusterNode = self._client.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        except (RedisError, RedisClusterException) as err:  # SlotNotCoveredError: the map has no master for it
            self._wake.set()
            return Outcome("fail", None, describe_error(err))
        asking = False
        for _ in range(MAX_REDIRECTS + 1):
            sent, redirect = self._send_once(node, args, asking)
            if redirect is None:
                if sent.refresh_map:
                    self._wake.set()
                return sent.outcome
            asking = isinstance(redirect, AskError)
            if not asking:
                self._client.nodes_manager.move_slot(redirect)  # as redis-py does for MOVED
            node = self._node_at(redirect.host, redirect.port)
        return Outcome("fail", node.name, f"more than {MAX_REDIRECTS} redirections")

    def _node_at(self, host: str, port: int) -> ClusterNode:
        node = self._client.nodes_manager.get_node(host=host, port=port)
        return node if node is not None else ClusterNode(host, port)

    def _send_once(self, node: ClusterNode, args: Sequence[str], asking: bool
                   ) -> tuple[_Sent, MovedError | AskError | None]:
        redis_node = self._client.get_redis_connection(node)
        pool = redis_node.connection_pool
        try:
            conn = pool.get_connection()
        except RedisError as err:  # refused or the handshake timed out: the SET never left
            return _Sent(Outcome("fail", node.name, describe_error(err)), refresh_map=True), None
        try:
            if asking:
                conn.send_command("ASKING")
                conn.read_response()
            conn.send_command(*args)
            reply = conn.read_response()
        except (MovedError, AskError) as err:
            return _Sent(Outcome("fail", node.name, describe_error(err)), refresh_map=False), err
        except ResponseError as err:  # CLUSTERDOWN, TRYAGAIN, NOAUTH...: refused
            stale_map = isinstance(err, ClusterDownError | TryAgainError)
            return _Sent(Outcome("fail", node.name, describe_error(err)), refresh_map=stale_map), None
        except RedisError as err:
            conn.disconnect()  # a late reply must never be read as the next command's
            return _Sent(Outcome("unknown", node.name, describe_error(err)), refresh_map=True), None
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        if reply in (b"OK", "OK", True):
            return _Sent(Outcome("ok", node.name), refresh_map=False), None
        return _Sent(Outcome("fail", node.name, f"unexpected reply {reply!r}"), refresh_map=False), None

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            if self._stop.is_set():
                return
            if not self._wake.is_set():
                continue
            self._wake.clear()
            try:
                self._client.nodes_manager.initialize()
            except (RedisError, RedisClusterException):
                self._wake.set()  # no node answered: try again after refresh_min_s
            self._stop.wait(self.target.refresh_min_s)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self._client.close()


@dataclass(frozen=True)
class _Sent:
    outcome: Outcome
    refresh_map: bool  # the error suggests the slot map is stale (a node gone, CLUSTERDOWN, TRYAGAIN)
