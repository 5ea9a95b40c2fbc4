"""KeyDB's active-replica mesh against real keydb-server peers on loopback: what multi-master replication does.

Every peer takes writes and replicates them to the others; a peer cut off keeps taking writes, and when the links
come back the newest write of a key wins on every peer (KeyDB stamps each write with a timestamp, MVCC). The lab's
scenarios cut a peer off with nftables on lab hosts (scenarios/keydb-*.yml); here the links are removed with
REPLICAOF REMOVE, which is what a partition does to them, without touching the machine's firewall.
"""

from __future__ import annotations

import pytest

from tests.support.servers import RedisServer, wait_mesh_links
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def _value(server: RedisServer, key: str) -> bytes | None:
    with server.client(socket_timeout=2) as c:
        return c.get(key)


def _cut(peer: RedisServer, others: list[RedisServer]) -> None:
    """Remove every replication link between `peer` and `others`, both ways."""
    with peer.client(socket_timeout=2) as c:
        for other in others:
            c.execute_command("REPLICAOF", "REMOVE", other.host, other.port)
    for other in others:
        with other.client(socket_timeout=2) as c:
            c.execute_command("REPLICAOF", "REMOVE", peer.host, peer.port)


def _join(peer: RedisServer, others: list[RedisServer]) -> None:
    with peer.client(socket_timeout=2) as c:
        for other in others:
            c.execute_command("REPLICAOF", other.host, other.port)
    for other in others:
        with other.client(socket_timeout=2) as c:
            c.execute_command("REPLICAOF", peer.host, peer.port)


def test_every_peer_takes_writes_and_sees_the_others(keydb_mesh) -> None:
    peers = keydb_mesh(3)
    with peers[0].client(socket_timeout=2) as c:
        assert list(c.config_get("active-replica").values()) in (["yes"], [b"yes"])
    for i, peer in enumerate(peers):
        with peer.client(socket_timeout=2) as c:
            c.set(f"written-on-{i}", i)
    for i in range(len(peers)):
        for peer in peers:
            wait_until(lambda p=peer, i=i: _value(p, f"written-on-{i}") == str(i).encode(), 10, 0.05,
                       f"peer {peer.port} has the write made on peer {i}")


def test_a_cut_off_peer_keeps_writing_and_the_newest_write_wins_after_the_heal(keydb_mesh) -> None:
    a, b, c = keydb_mesh(3)
    _cut(c, [a, b])
    # both sides take a write of the same key; c's is the newer one
    with a.client(socket_timeout=2) as client:
        client.set("contested", "from-majority")
        client.set("only-majority", "m")
    wait_until(lambda: _value(b, "contested") == b"from-majority", 10, 0.05, "b has a's write")
    with c.client(socket_timeout=2) as client:
        client.set("contested", "from-minority")
        client.set("only-minority", "n")
    assert _value(a, "contested") == b"from-majority" and _value(c, "contested") == b"from-minority"

    _join(c, [a, b])
    for peer in (a, b, c):
        wait_mesh_links(peer, 2)
    for peer in (a, b, c):
        wait_until(lambda p=peer: _value(p, "contested") == b"from-minority", 15, 0.05,
                   f"peer {peer.port} converged on the newest write")
        # writes on either side that did not conflict survive the heal everywhere
        wait_until(lambda p=peer: _value(p, "only-majority") == b"m" and _value(p, "only-minority") == b"n", 15,
                   0.05, f"peer {peer.port} has both sides' writes")
