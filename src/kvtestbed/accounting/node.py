"""The `node` strategy: every op goes to ONE named node of a key-value group, and the read of a key on every node.

No failover logic: the writer keeps its node whatever happens, which is what an application pinned to one peer of a
KeyDB active-replica mesh does (every peer takes writes), and what shows what the node itself accepts under a fault:
an isolated mesh peer keeps acknowledging writes, a replica of a replication set refuses them (READONLY -> fail).
One attempt per op, classified as the other strategies do (strategies.execute_once): ok on +OK, fail on an error
reply or an error before the command left, unknown on a timeout or a connection lost after it was sent.

After the heal, `read_group` reads the written keys on every node of the group and polls, bounded, until the nodes
agree (mesh peers merge, replicas resync) - or reports that they did not: the conflicts check and the node writers'
read-back share that one read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from kvtestbed.accounting.checker import read_back
from kvtestbed.accounting.strategies import AccountingError, Outcome, execute_once, read_secret

NODE_STRATEGY = "node"
READ_INTERVAL_S = 0.2  # between two reads of every node while they settle


@dataclass(frozen=True)
class Peer:
    """One key-value instance of the group: the inventory host's name, where it listens."""

    name: str
    address: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class NodeSet:
    """Every node of a key-value group and how to log in to them (the data user, as the other strategies do).

    `converges`: the nodes replicate to one another (mesh, replication), so after the heal they should hold the same
    values and a read waits for that; the nodes of a standalone group are independent and are read once."""

    group: str
    peers: tuple[Peer, ...]
    username: str | None = None
    password_file: Path | None = None
    converges: bool = True
    op_timeout_s: float = 1.0
    connect_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.peers:
            raise AccountingError(f"group {self.group}: no key-value node to write to or read from")
        if self.op_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise AccountingError("timeouts must be positive")

    def peer(self, name: str) -> Peer:
        for peer in self.peers:
            if peer.name == name:
                return peer
        names = ", ".join(p.name for p in self.peers)
        raise AccountingError(f"host {name!r} is not a node of group {self.group!r} ({names})")

    def node_kwargs(self, **overrides: Any) -> dict[str, Any]:
        password = read_secret(self.password_file, "data node") if self.password_file else None
        kwargs = {
            "username": self.username,
            "password": password,
            "socket_timeout": self.op_timeout_s,
            "socket_connect_timeout": self.connect_timeout_s,
            "retry": Retry(NoBackoff(), 0),
        }
        return {**kwargs, **overrides}


@dataclass(frozen=True)
class NodeTarget:
    """One node of a group, the one a `node` writer writes to; the set is kept for the read on every node."""

    nodes: NodeSet
    host: str

    def __post_init__(self) -> None:
        self.nodes.peer(self.host)  # AccountingError (one line) for a host that is not in the set

    @property
    def peer(self) -> Peer:
        return self.nodes.peer(self.host)

    def describe(self) -> str:
        return f"node:{self.host}@{self.peer.endpoint}"

    def op_bound_s(self) -> float:
        """The longest one op can take: a connect and a reply."""
        return self.nodes.op_timeout_s + self.nodes.connect_timeout_s


class NodeStrategy:
    """SET on one node's connection, one attempt (module doc)."""

    name = NODE_STRATEGY

    def __init__(self, target: NodeTarget) -> None:
        self.target = target
        peer = target.peer
        self._client = redis.Redis(host=peer.address, port=peer.port, **target.nodes.node_kwargs())

    def op_bound_s(self) -> float:
        return self.target.op_bound_s()

    def set(self, key: str, value: str) -> Outcome:
        return execute_once(self._client.connection_pool, ("SET", key, value), lambda: self.target.peer.endpoint)

    def close(self) -> None:
        self._client.close()


@dataclass
class GroupRead:
    """Every key's value on every node (node name -> key -> value, None: missing), and whether the nodes agreed."""

    group: str
    values: dict[str, dict[str, str | None]]
    converged: bool  # every node holds the same value of every key
    settle_s: float  # from the first read to the read returned
    reads: int
    nodes: list[str] = field(default_factory=list)

    def on(self, node: str) -> dict[str, str | None]:
        return self.values.get(node, {})


def _read_peer(nodes: NodeSet, peer: Peer, keys: list[str]) -> dict[str, str | None]:
    # a read-back of many keys takes longer than one op: a longer reply timeout, the same connect timeout
    kwargs = nodes.node_kwargs(socket_timeout=max(nodes.op_timeout_s, 10.0))
    with redis.Redis(host=peer.address, port=peer.port, **kwargs) as client:
        return read_back(client, keys)


def _agree(values: dict[str, dict[str, str | None]]) -> bool:
    snapshots = list(values.values())
    return all(snapshot == snapshots[0] for snapshot in snapshots[1:])


def read_group(
    nodes: NodeSet, keys: Iterable[str], timeout_s: float = 30.0, interval_s: float = READ_INTERVAL_S
) -> GroupRead:
    """Read `keys` on every node until the nodes agree twice in a row (a merge in flight cannot pass for a settled
    state), or until timeout_s: then the last read, converged False. A group whose nodes do not replicate is read
    once. AccountingError (one line, naming the node) when a node still does not answer at the deadline."""
    keys = list(dict.fromkeys(keys))
    start = time.monotonic()
    deadline = start + timeout_s
    previous: dict[str, dict[str, str | None]] | None = None
    reads = 0
    while True:
        values: dict[str, dict[str, str | None]] = {}
        silent: list[str] = []
        for peer in nodes.peers:
            try:
                values[peer.name] = _read_peer(nodes, peer, keys)
            except (RedisError, OSError) as err:
                silent.append(f"{peer.name} ({peer.endpoint}: {type(err).__name__})")
        reads += 1
        now = time.monotonic()
        if not silent:
            settled = not nodes.converges or (_agree(values) and values == previous)
            if settled or now > deadline:
                return GroupRead(nodes.group, values, _agree(values), round(now - start, 3), reads,
                                 [p.name for p in nodes.peers])  # fmt: skip
            previous = values
        elif now > deadline:
            raise AccountingError(f"group {nodes.group}: {', '.join(silent)} did not answer the read-back within "
                                  f"{timeout_s:g} s")  # fmt: skip
        else:
            previous = None
        time.sleep(interval_s)  # the pace of polling a condition, bounded by the deadline above
