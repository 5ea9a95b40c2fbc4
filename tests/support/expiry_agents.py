"""The expiry workload's agents for Locust tests: two consumers and two workers on one stream, and their own audit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from kvagent.workloads.expiry.ledger import Ledger

from tests.support.agentproc import AgentProcess
from tests.support.servers import NatsServer, RedisServer
from tests.support.wait import wait_until


def start_expiry_agents(
    tmp_path: Path, run_id: str, target: RedisServer, ledger: RedisServer, nats: NatsServer
) -> list[AgentProcess]:
    """Consumers c0, c1 (both subscribed on return) and workers w0, w1 of run_id; the caller kills them."""
    cfg = {
        "run_id": run_id,
        "ledger": ledger.endpoint(),
        "target": {"mode": "nodes", "nodes": [target.endpoint()]},
        "nats": {"servers": [nats.url]},
        "stream": {"name": f"EXP_{run_id}", "subject": f"kvt.expiry.{run_id}", "duplicate_window_s": 60},
    }
    procs = [
        AgentProcess("expiry", {**cfg, "role": "consumer", "consumer": {"name": f"c{i}"}}, tmp_path, name=f"c{i}")
        for i in range(2)
    ] + [
        AgentProcess("expiry", {**cfg, "role": "worker", "worker": {"name": f"w{i}"}}, tmp_path, name=f"w{i}")
        for i in range(2)
    ]
    for p in procs:
        p.start(wait=False)
    for p in procs:
        p.wait_healthy()
    for p in procs[:2]:  # events before a consumer subscribed would be lost by design
        wait_until(lambda p=p: p.summary()["subscriptions"], 10, what=f"{p.name} subscribed")
    return procs


def agents_audit(ledger: RedisServer, run_id: str, grace_ms: int) -> dict[str, Any]:
    """The expiry agents' own audit code (kvagent Ledger.audit) over the whole ledger of run_id."""

    async def audit() -> dict[str, Any]:
        client = aioredis.Redis(host=ledger.host, port=ledger.port, decode_responses=True)
        try:
            return (await Ledger(client, run_id).audit(int(time.time() * 1000), grace_ms)).as_dict()
        finally:
            await client.aclose()

    return asyncio.run(audit())


def lossless_run_cells(keys: int, ttl_ms: int) -> dict[tuple[str, str], str]:
    """What the Workload tab shows, (section, figure) -> cell, after a complete expiry run of `keys` keys with a TTL
    of ttl_ms that lost none and processed none twice (compare with `{k: cells.get(k) for k in expected}`)."""
    return {
        ("expiry run", "keys requested"): str(keys),
        ("expiry run", "TTL ms"): str(ttl_ms),
        ("ledger audit", "generated"): str(keys),
        ("ledger audit", "consumed (processed keys)"): str(keys),
        ("ledger audit", "lost"): "0",
        ("ledger audit", "processed twice (keys)"): "0",
    }
