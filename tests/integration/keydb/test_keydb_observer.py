"""Seed 003 on a real KeyDB active-replica mesh: a writer and its listeners each in a process of their own.

The writer agent writes on peer A; a synchronous listener agent on peer B and an asyncio listener agent on peer C
hear every version through KeyDB's active replication, and their acknowledgements end at the writer, which keeps
the round trip per listener (`writer.rtt_by_listener`) although the listeners live in other processes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

WRITES = 300


def test_listeners_in_processes_of_their_own_hear_every_write_on_every_peer(keydb_mesh, agents) -> None:
    a, b, c = keydb_mesh(3)
    writer_cfg: dict[str, Any] = {"endpoint": a.endpoint(), "rate": 100, "count": WRITES}
    listeners = {
        "b-sync": ("sync", b),
        "c-async": ("async", c),
    }
    procs = [
        agents("observer", {"writer": {**writer_cfg, "enabled": False},
                            "listeners": [{"name": name, "mode": mode, "endpoint": peer.endpoint()}],
                            "drain_s": 0.3}, name=name)
        for name, (mode, peer) in listeners.items()
    ]
    for proc in procs:
        wait_until(lambda p=proc: p.summary()["listeners"][p.name]["subscribed"], 10, what=f"{proc.name} subscribed")
    writer = agents("observer", {"writer": writer_cfg, "listeners": [], "drain_s": 0.3}, name="writer")
    writer.wait_for(
        lambda s: s["writer"]["writes"] >= WRITES
        and all(s["writer"]["rtt_by_listener"].get(n, {}).get("count", 0) >= WRITES for n in listeners),
        timeout_s=30, what="every write acknowledged by both listeners",
    )
    summaries = {p.name: p.stop()["summary"] for p in procs}
    written = writer.stop()["summary"]["writer"]
    assert written["writes"] == WRITES and written["write_errors"] == 0
    assert written["acks_received"] == 2 * WRITES and written["acks_unmatched"] == 0
    for name in listeners:
        lst = summaries[name]["listeners"][name]
        assert lst["notifications"] == WRITES, name  # a keyspace event for every version, replicated peer to peer
        assert (lst["missed"], lst["duplicates"], lst["stale_reads"]) == (0, 0, 0), name
        assert lst["versions"] + lst["coalesced"] == WRITES, name
        assert 0 < lst["notify_latency"]["p50_us"] < 50_000, name
        assert written["rtt_by_listener"][name]["count"] == WRITES
        assert written["rtt_by_listener"][name]["p50_us"] >= lst["notify_latency"]["p50_us"], name
