"""Hotkeys agent pieces without servers: shard keys, slot ownership, commandstats parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from kvagent.service.config import ConfigError, load_config
from kvagent.workloads.hotkeys.agent import HotkeysConfig, HotkeysSettings, command_calls, owner_of, slot_owner_map
from redis.crc import key_slot

EXAMPLES = Path(__file__).resolve().parents[3] / "agents" / "examples"


def test_example_loads() -> None:
    config = load_config(EXAMPLES / "hotkeys.yaml", HotkeysConfig, environ={})
    assert config.hotkeys.shards == 16


def test_shard_keys_use_hash_tags() -> None:
    keys = HotkeysSettings(shards=4).shard_keys()
    assert keys == ["key:{0}", "key:{1}", "key:{2}", "key:{3}"]
    assert [key_slot(k.encode()) for k in keys] == [key_slot(str(i).encode()) for i in range(4)]


def test_slot_owner_map() -> None:
    reply = [
        [5461, 10922, [b"127.0.0.1", 7001, b"id2"], [b"127.0.0.1", 7004, b"id5"]],
        [0, 5460, [b"127.0.0.1", 7000, b"id1"]],
        [10923, 16383, ["127.0.0.1", 7002, "id3"]],
    ]
    ranges = slot_owner_map(reply)
    assert owner_of(ranges, 0) == "127.0.0.1:7000"
    assert owner_of(ranges, 5461) == "127.0.0.1:7001"
    assert owner_of(ranges, 16383) == "127.0.0.1:7002"


def test_command_calls() -> None:
    stats = {"cmdstat_incr": {"calls": 12, "usec": 3}, "cmdstat_info": {"calls": 2}}
    assert command_calls(stats, "incr") == 12
    assert command_calls(stats, "get") == 0


def test_cluster_mode_required(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("target: {mode: nodes, nodes: [{host: h, port: 6379}]}\n")
    with pytest.raises(ConfigError, match="cluster"):
        load_config(path, HotkeysConfig, environ={})


def test_counters_of_both_phases_exist_at_zero_before_any_op() -> None:
    # an error-free run must still export kvt_hotkeys_errors, or the dashboards' error rate has nothing to read
    from kvagent.workloads.hotkeys.agent import HotkeysAgent
    from prometheus_client import generate_latest

    agent = HotkeysAgent(load_config(EXAMPLES / "hotkeys.yaml", HotkeysConfig, environ={}))
    text = generate_latest(agent.registry).decode()
    for phase in ("hot", "sharded"):
        assert f'kvt_hotkeys_errors_total{{phase="{phase}"}} 0.0' in text
        assert f'kvt_hotkeys_ops_total{{phase="{phase}"}} 0.0' in text
