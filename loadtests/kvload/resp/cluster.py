"""Redis Cluster: route each command to the master owning its key's slot, follow MOVED and ASK.

The slot map comes from CLUSTER SLOTS (every Redis/Valkey/KeyDB cluster answers it; SHARDS is 7.0+ only). The slot
of a key is redis-py's `redis.crc.key_slot` (hash tags included). Each node gets `size` shared, auto-pipelined
connections and a user keeps its index across nodes, so connections stay spread as in standalone mode.

Redirections, bounded by `max_attempts` per command:
- MOVED slot host:port: the slot has a new owner. The map entry is set from the reply at once, the whole map is
  refreshed (at most once per REFRESH_MIN_S, one greenlet at a time: a migration can MOVE thousands of requests
  within milliseconds) and the command is resent to the new owner.
- ASK slot host:port: the key is mid-migration; ASKING + the command go back to back to the named node, once, and
  the map is left alone.
- TRYAGAIN / CLUSTERDOWN: short backoff (and a refresh for CLUSTERDOWN), then again.
A node that cannot be connected to triggers a refresh and a retry (nothing was sent). A connection lost after the
command left fails that command: resending could run it twice and the server's counters would no longer equal ours.
Pipelines group their commands by node, send every group before waiting for any, and retry redirected commands one
by one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import Any

import gevent
import gevent.lock
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from kvload.resp.connection import (
    Address,
    Arg,
    AuthenticationFailed,
    Connection,
    ConnectSettings,
    RespConnectionError,
    RespError,
    pack,
    reason_of,
)

REFRESH_MIN_S = 0.1
_ASKING = pack((b"ASKING",))


class ClusterClient:
    def __init__(
        self, startup: Sequence[Address], settings: ConnectSettings, size: int = 16, max_attempts: int = 6
    ) -> None:
        self.startup = list(startup)
        self.settings = settings
        self.size = max(size, 1)
        self.max_attempts = max_attempts
        self._slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._nodes: dict[Address, list[Connection | None]] = {}
        self._lock = gevent.lock.Semaphore()
        self._refreshed_at = 0.0
        self.refreshes = 0
        self.moved = 0
        self.asked = 0

    # -- the map -----------------------------------------------------------------------------------------
    def connection(self, address: Address, index: int) -> Connection:
        conns = self._nodes.get(address)
        if conns is None:
            conns = self._nodes[address] = [None] * self.size
        i = index % self.size
        conn = conns[i]
        if conn is None:
            conn = conns[i] = Connection(address, self.settings)
        return conn

    def masters(self) -> list[Address]:
        return list(dict.fromkeys(a for a in self._slots if a is not None))

    def refresh(self, prefer: Address | None = None, force: bool = True) -> None:
        """Load the slot map. force=False: skip when another greenlet refreshed within REFRESH_MIN_S."""
        asked_at = time.monotonic()
        with self._lock:
            if not force and asked_at - self._refreshed_at < REFRESH_MIN_S:
                return
            candidates = list(dict.fromkeys([*([prefer] if prefer else []), *self.masters(), *self.startup]))
            errors: list[str] = []
            for address in candidates:
                try:
                    reply = self.connection(address, 0).call(b"CLUSTER", b"SLOTS")
                except AuthenticationFailed:
                    raise  # the same credentials serve every node: asking the next one cannot help
                except (RespConnectionError, RespError) as exc:
                    errors.append(f"{address[0]}:{address[1]} {reason_of(exc)}")
                    continue
                self._slots = _slot_map(reply, address)
                self._refreshed_at = time.monotonic()
                self.refreshes += 1
                return
            raise RespConnectionError(None, "; ".join(errors), "no cluster node answered CLUSTER SLOTS")

    def node_for(self, key: bytes | None) -> Address:
        owner = next((a for a in self._slots if a is not None), None) if key is None else self._slots[key_slot(key)]
        if owner is None:
            self.refresh(force=False)
            owner = self._slots[key_slot(key)] if key is not None else next(iter(self.masters()), None)
            if owner is None:
                raise RespConnectionError(None, "no master serves this key's slot", "cluster incomplete")
        return owner

    # -- one command -------------------------------------------------------------------------------------
    def send(self, index: int, key: bytes | None, packed: bytes) -> Any:
        address = self.node_for(key)
        asking = False
        last: BaseException | None = None
        for _ in range(self.max_attempts):
            conn = self.connection(address, index)
            try:
                waiter = conn.submit_many([_ASKING, packed]) if asking else conn.submit(packed)
            except RespConnectionError as exc:  # nothing was sent: the map may name a node that has gone
                last = exc
                gevent.sleep(0.01)
                self.refresh(force=False)
                address, asking = self.node_for(key), False
                continue
            try:
                reply = waiter.get()
                if asking:
                    reply = reply[1]
                    if isinstance(reply, RespError):
                        raise reply
                return reply
            except RespError as exc:
                redirect = self._redirect(exc, address, key)
                if redirect is None:
                    raise
                last = exc
                address, asking = redirect
            except RespConnectionError:
                self._refresh_later()
                raise
        assert last is not None
        raise last

    def _redirect(self, exc: RespError, address: Address, key: bytes | None) -> tuple[Address, bool] | None:
        """Where to send a redirected command next and whether with ASKING; None: not a redirection."""
        text = str(exc)
        kind, _, rest = text.partition(" ")
        if kind == "MOVED":
            self.moved += 1
            slot_text, _, where = rest.partition(" ")
            target = _address(where, address)
            # the redirection alone is enough to retry when no node answers; the next MOVED refreshes again
            with contextlib.suppress(RespConnectionError):
                self.refresh(prefer=target, force=False)
            self._slots[int(slot_text)] = target  # the reply is newer than any map a node gossiped to us
            return target, False
        if kind == "ASK":
            self.asked += 1
            return _address(rest.partition(" ")[2], address), True
        if kind == "TRYAGAIN":
            gevent.sleep(0.01)
            return address, False
        if kind == "CLUSTERDOWN":
            gevent.sleep(0.05)
            self.refresh(force=False)
            return self.node_for(key), False
        return None

    def _refresh_later(self) -> None:
        def run() -> None:
            with contextlib.suppress(RespConnectionError):  # the next command refreshes again
                self.refresh(force=False)

        gevent.spawn(run)

    # -- pipelines ---------------------------------------------------------------------------------------
    def send_many(self, index: int, keys: Sequence[bytes | None], packed: Sequence[bytes]) -> list[Any]:
        """Replies in order; error replies as RespError instances (as Connection.send_many)."""
        groups: dict[Address, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(self.node_for(key), []).append(i)
        results: list[Any] = [None] * len(packed)
        retry: list[int] = []
        waiting = []
        for address, idxs in groups.items():
            try:
                waiting.append((idxs, self.connection(address, index).submit_many([packed[i] for i in idxs])))
            except RespConnectionError:
                retry.extend(idxs)  # never sent
        for idxs, waiter in waiting:
            replies = waiter.get()  # a connection lost mid-pipeline fails the pipeline (see the module doc)
            for i, reply in zip(idxs, replies, strict=True):
                if isinstance(reply, RespError) and str(reply).partition(" ")[0] in _REDIRECTS:
                    retry.append(i)
                else:
                    results[i] = reply
        for i in retry:
            try:
                results[i] = self.send(index, keys[i], packed[i])
            except RespError as exc:
                results[i] = exc
        return results

    def handle(self, index: int) -> ClusterHandle:
        return ClusterHandle(self, index)

    def close(self) -> None:
        for conns in self._nodes.values():
            for conn in conns:
                if conn is not None:
                    conn.close()


_REDIRECTS = frozenset(("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"))


class ClusterHandle:
    """One user's view of the cluster: the same connection index on every node (kvload.resp.Client)."""

    __slots__ = ("cluster", "index")

    def __init__(self, cluster: ClusterClient, index: int) -> None:
        self.cluster = cluster
        self.index = index

    def send(self, key: bytes | None, packed: bytes) -> Any:
        return self.cluster.send(self.index, key, packed)

    def send_many(self, keys: Sequence[bytes | None], packed: Sequence[bytes]) -> list[Any]:
        return self.cluster.send_many(self.index, keys, packed)

    def call(self, *args: Arg) -> Any:
        return self.send(_key_of(args), pack(args))

    def call_many(self, commands: Iterable[Sequence[Arg]], raise_on_error: bool = True) -> list[Any]:
        cmds = list(commands)
        replies = self.send_many([_key_of(c) for c in cmds], [pack(c) for c in cmds])
        if raise_on_error:
            for r in replies:
                if isinstance(r, RespError):
                    raise r
        return replies


def _key_of(args: Sequence[Arg]) -> bytes | None:
    """The routing key of a single-key command: its first argument (GET, SET, INCR, HSET, XADD, ...)."""
    if len(args) < 2:
        return None
    k = args[1]
    return k if isinstance(k, bytes) else str(k).encode()


def _address(text: str, asked: Address) -> Address:
    """host:port from a redirection; an empty host means the node that replied (cluster-preferred-endpoint-type
    unknown-endpoint)."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]")
    return (host or asked[0], int(port))


def _slot_map(reply: list[Any], asked: Address) -> list[Address | None]:
    slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    for entry in reply:
        start, end, master = int(entry[0]), int(entry[1]), entry[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        if host in ("", "?"):
            host = asked[0]
        owner = (host, int(master[1]))
        for s in range(start, end + 1):
            slots[s] = owner
    return slots
