"""Hotkeys agent against a real 3-master Redis Cluster (redis_cluster fixture)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from tests.support.agentproc import RSS_LIMIT_BYTES, AgentProcess, run_bad_config
from tests.support.servers import LOOPBACK, RedisCluster
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SHARDS = 16
OPS = 6000


def cluster_target(cluster: RedisCluster) -> dict[str, Any]:
    return {"mode": "cluster", "nodes": cluster.startup_nodes()[:3]}


def test_slots_match_cluster_keyslot(redis_cluster: RedisCluster) -> None:
    """redis-py's key_slot (what the agent reports and redis-py's cluster client routes by) agrees with the
    server, hash tags and non-ASCII keys included."""
    keys = ["hot", "foo", "", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap", "ключ"]
    keys += [f"key:{{{i}}}" for i in range(64)] + [f"kvt:exp:run:{i}" for i in range(200)]
    with redis.Redis(host=LOOPBACK, port=redis_cluster.masters_ports[0], socket_timeout=2) as c:
        for key in keys:
            assert key_slot(key.encode()) == c.execute_command("CLUSTER", "KEYSLOT", key), key


def test_sharding_evens_out_per_node_ops(tmp_path: Path, redis_cluster: RedisCluster) -> None:
    config = {
        "target": cluster_target(redis_cluster),
        "hotkeys": {"shards": SHARDS, "ops": OPS, "concurrency": 8, "cycles": 1, "pause_s": 0.2},
    }
    agent = AgentProcess("hotkeys", config, tmp_path, name="hotkeys").start(wait=False)
    try:
        agent.wait_healthy()

        def finished() -> dict[str, Any] | None:
            agent.sample_rss()
            s = agent.summary()
            return s if s["cycles_done"] >= 1 else None

        wait_until(finished, 90, 0.5, "one hot+sharded cycle")
        summary = agent.stop()["summary"]
    finally:
        agent.kill()
    assert agent.max_rss <= RSS_LIMIT_BYTES

    assert summary["slot_mismatches"] == 0
    keys = summary["keys"]
    assert len(keys) == SHARDS + 1
    masters = {f"{LOOPBACK}:{p}" for p in redis_cluster.masters_ports}
    assert all(k["node"] in masters for k in keys.values())
    hot, sharded = summary["phases"]
    assert hot["phase"] == "hot" and sharded["phase"] == "sharded"
    assert hot["ops"] == OPS and sharded["ops"] == OPS
    # Measured from each node's INFO commandstats, not from our own counts.
    assert sum(hot["per_node_ops"].values()) == OPS
    assert sum(sharded["per_node_ops"].values()) == OPS
    hot_node = keys["hot"]["node"]
    assert hot["per_node_ops"][hot_node] == OPS
    # One hot key: one master takes everything (max/mean = number of masters).
    assert hot["evenness"]["imbalance"] == pytest.approx(3.0)
    # The 16 shard keys' slots are known, so the expected split is too.
    expected: dict[str, int] = {}
    for i in range(SHARDS):
        node = keys[f"key:{{{i}}}"]["node"]
        expected[node] = expected.get(node, 0) + OPS // SHARDS + (1 if i < OPS % SHARDS else 0)
    assert {n: v for n, v in sharded["per_node_ops"].items() if v} == expected
    assert sharded["evenness"]["imbalance"] < 1.3
    figures = {
        "hot_imbalance": hot["evenness"]["imbalance"],
        "sharded_imbalance": round(sharded["evenness"]["imbalance"], 3),
        "sharded_per_node": sharded["per_node_ops"],
        "hot_ops_per_s": hot["ops_per_s"],
        "sharded_ops_per_s": sharded["ops_per_s"],
        "hot_p99_us": hot["p99_us"],
        "sharded_p99_us": sharded["p99_us"],
        "rss_mb": round(agent.max_rss / 2**20, 1),
    }
    print("HOTKEYS-FIGURES", json.dumps(figures))


def test_bad_input_exits_2(tmp_path: Path, redis_cluster: RedisCluster) -> None:
    target = cluster_target(redis_cluster)
    cases = {
        "not a cluster mode": {"target": {**target, "mode": "nodes"}},
        "wrong type": {"target": target, "hotkeys": {"shards": "sixteen"}},
        "negative rate": {"target": target, "hotkeys": {"rate": -1}},
        "unknown key": {"target": target, "hotkeys": {"hot": "x"}},
        "unreachable": {"target": {"mode": "cluster", "nodes": [{"host": "127.0.0.1", "port": 1}]}},
        "unknown command": {"target": target, "hotkeys": {"command": "del"}},
        # (wrong password: the cluster fixture has none and redis-py accepts any password then;
        # test_expiry covers it against a protected server)
    }
    for what, config in cases.items():
        code, err = run_bad_config("hotkeys", {**config, "service": {"metrics_port": 0}}, tmp_path)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, f"{what}: exit {code}: {err}"
