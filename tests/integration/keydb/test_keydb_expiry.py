"""Seed 000 on KeyDB: expiry events from an active-replica mesh, where every peer expires each key itself.

Consumers subscribe to `expired` on every peer of a 3-peer mesh (real keydb-server on loopback): each key's expiry
is heard from several peers, so the duplicates before deduplication are the point of the run; after it (in the
store, or by JetStream's Nats-Msg-Id window) each key is processed exactly once and none is lost. The same run on
one Redis node hears each key once per consumer (tests/integration/agents/test_expiry.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.agentproc import AgentProcess
from tests.support.servers import NatsServer, RedisServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

KEYS = 2_000
CONSUMERS = 2


def _audit(ledger: RedisServer, run_id: str) -> dict[str, Any] | None:
    with ledger.client(socket_timeout=2) as c:
        raw = c.get(f"kvt:ledger:{{{run_id}}}:audit")
    return json.loads(raw) if raw else None


@pytest.mark.parametrize("dedup", ["store", "jetstream"])
def test_mesh_expiries_heard_from_every_peer_processed_once(
    tmp_path: Path, keydb_mesh: Any, server_factory: Any, nats_server: NatsServer, dedup: str
) -> None:
    peers = keydb_mesh(3, extra=("--hz", "100"))
    ledger = server_factory("redis")
    run_id = f"keydb-{dedup}"
    cfg = {
        "run_id": run_id,
        "ledger": ledger.endpoint(),
        "target": {"mode": "nodes", "nodes": [p.endpoint() for p in peers]},
        "nats": {"servers": [nats_server.url]},
        "stream": {"name": f"EXP_{run_id}", "subject": f"kvt.expiry.{run_id}", "duplicate_window_s": 60},
    }
    consumers = [
        AgentProcess("expiry", {**cfg, "role": "consumer", "consumer": {"name": f"c{i}", "dedup": dedup}},
                     tmp_path, name=f"c{i}")
        for i in range(CONSUMERS)
    ]
    workers = [
        AgentProcess("expiry", {**cfg, "role": "worker", "worker": {"name": f"w{i}", "batch": 1}}, tmp_path,
                     name=f"w{i}")
        for i in range(2)
    ]
    generator = AgentProcess(
        "expiry",
        {**cfg, "role": "generator", "generator": {"count": KEYS, "rate": 2000, "ttl_ms": 1500, "ttl_jitter_ms": 1500,
                                                    "grace_ms": 15000, "audit_interval_s": 1.0, "seed": 3}},
        tmp_path, name="generator",
    )
    agents = [*consumers, *workers]
    try:
        for agent in agents:
            agent.start(wait=False)
        for agent in agents:
            agent.wait_healthy()
        for agent in consumers:
            # subscribed on all three peers before any key is written: earlier events would be lost by design
            wait_until(lambda a=agent: len(a.summary()["subscriptions"]) == 3, 10, what=f"{agent.name} on 3 peers")
        generator.start(wait=False)
        generator.wait_healthy()
        agents.append(generator)
        audit = wait_until(lambda: (a := _audit(ledger, run_id)) and a["complete"] and a, 90, 0.5, "audit complete")
        # every consumer has handled each event it will hear: received == published + suppressed, steady
        wait_until(lambda: all((s := c.summary())["received"] == s["published"] + s["suppressed"] and s["received"]
                               >= KEYS for c in consumers), 30, 0.25, "consumers settled")
        summaries = {c.name: c.stop()["summary"] for c in consumers}
    finally:
        for agent in agents:
            agent.kill()

    assert audit["generated"] == KEYS
    assert (audit["lost"], audit["processed_twice"], audit["unknown_processed"]) == (0, 0, 0), audit
    assert audit["processed_keys"] == KEYS
    received = sum(s["received"] for s in summaries.values())
    published = sum(s["published"] for s in summaries.values())
    # Each consumer hears a key from more than one peer (active replicas expire it themselves): the duplicates
    # KeyDB makes, which a single Redis node does not (there: received == KEYS per consumer).
    per_key = received / (CONSUMERS * KEYS)
    assert per_key > 1.5, f"{received} events for {KEYS} keys x {CONSUMERS} consumers: no mesh duplicates?"
    if dedup == "store":
        assert published == KEYS  # the store let exactly one copy of each key through
    else:
        assert published >= KEYS  # JetStream drops the rest by message id: the workers still processed once
    print("KEYDB-EXPIRY-FIGURES", json.dumps({
        "dedup": dedup, "keys": KEYS, "consumers": CONSUMERS, "events_received": received,
        "events_per_key_per_consumer": round(per_key, 2), "published": published,
        "suppressed": sum(s["suppressed"] for s in summaries.values()), "per_worker": audit["per_worker"],
    }))
