"""What a scenario's names become in an inventory (kvtestbed.scenarios.wiring) and the runner's end-of-run table.

Inventories are built as `ansible-inventory --list` prints them; secrets are files in tmp_path, as the roles write
them. Nothing here talks to a server: the runner's use of these targets is tested in tests/lab/test_scenarios_lab.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvtestbed.accounting import ClusterTarget, JetStreamTarget, SentinelTarget
from kvtestbed.inventory import Inventory
from kvtestbed.scenarios.agents import numeric_leaves
from kvtestbed.scenarios.runner import summary_table
from kvtestbed.scenarios.wiring import (
    WiringError,
    cluster_target,
    jetstream_target,
    load_target,
    monitor_name,
    sentinel_target,
)

HOSTS = {"h1": "10.9.0.11", "h2": "10.9.0.12", "h3": "10.9.0.13"}


def inventory(with_sentinel: bool = True) -> Inventory:
    redis = {"engine": "redis", "topology": "replication", "ports": [6379], "primary": "h2"}
    cluster = {"engine": "redis", "topology": "cluster", "ports": [7000, 7001]}
    hostvars = {}
    for name, address in HOSTS.items():
        hostvars[name] = {"ansible_host": address, "redis_kvstore": redis, "redis_cluster_kvstore": cluster,
                          "sentinel_monitors": [{"name": "mymaster", "group": "redis", "port": 6379}]}  # fmt: skip
    listing = {
        "_meta": {"hostvars": hostvars},
        "all": {"children": ["redis", "redis_cluster", "nats", *(["sentinel"] if with_sentinel else [])]},
        "redis": {"hosts": list(HOSTS)},
        "redis_cluster": {"hosts": list(HOSTS)},
        "nats": {"hosts": ["h1", "h3"]},
    }
    if with_sentinel:
        listing["sentinel"] = {"hosts": list(HOSTS)}
    return Inventory.from_listing("test", listing)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    for name in ("sentinel-admin", "redis-agent", "redis_cluster-agent", "nats_agent"):
        (tmp_path / name).write_text("s3cret\n")
    return tmp_path


def test_a_sentinel_group_names_every_sentinel_and_the_secrets_files(secrets: Path) -> None:
    target = sentinel_target(inventory(), "redis", secrets)
    assert isinstance(target, SentinelTarget)
    assert target.sentinels == tuple((address, 26379) for address in HOSTS.values())
    assert target.service == "mymaster" == monitor_name(inventory(), "redis")
    assert (target.username, target.password_file) == ("agent", secrets / "redis-agent")
    assert target.sentinel_password_file == secrets / "sentinel-admin"


def test_a_missing_secret_or_sentinel_is_one_line_naming_what_to_do(secrets: Path) -> None:
    (secrets / "redis-agent").unlink()
    with pytest.raises(WiringError, match=r"redis-agent is missing \(run kvtestbed deploy"):
        sentinel_target(inventory(), "redis", secrets)
    with pytest.raises(WiringError, match="no sentinel group"):
        sentinel_target(inventory(with_sentinel=False), "redis", secrets)


def test_cluster_and_jetstream_targets(secrets: Path) -> None:
    cluster = cluster_target(inventory(), "redis_cluster", secrets)
    assert isinstance(cluster, ClusterTarget)
    assert len(cluster.nodes) == 6 and ("10.9.0.12", 7001) in cluster.nodes
    with pytest.raises(WiringError, match="not a Redis Cluster"):
        cluster_target(inventory(), "redis", secrets)
    stream = jetstream_target(inventory(), "nats", secrets, "pub-1", "00001234")
    assert isinstance(stream, JetStreamTarget)
    assert stream.servers == ("nats://10.9.0.11:4222", "nats://10.9.0.13:4222")
    # a stream and subject of the run's own: a read-back counts this run's messages only
    assert (stream.stream, stream.subject) == ("KVT_ACCT_00001234_PUB_1", "kvt.acct.00001234.pub_1")


def test_load_targets_never_carry_a_password(secrets: Path) -> None:
    url, password, options = load_target(inventory(), "redis", secrets)
    assert url == "redis+sentinel://agent@10.9.0.11:26379,10.9.0.12:26379,10.9.0.13:26379/mymaster"
    assert password == str(secrets / "redis-agent") and options == {
        "sentinel-password-file": str(secrets / "sentinel-admin")
    }
    url, _, _ = load_target(inventory(with_sentinel=False), "redis", secrets)
    assert url == "redis://agent@10.9.0.12:6379"  # the configured primary, h2
    url, _, _ = load_target(inventory(), "redis_cluster", secrets)
    assert url.startswith("redis+cluster://agent@10.9.0.11:7000,")
    assert load_target(inventory(), "redis://10.1.1.1:6379", secrets) == ("redis://10.1.1.1:6379", "", {})
    assert "s3cret" not in url


def test_agent_summaries_become_flat_figures() -> None:
    summary = {"writer": {"writes": 10, "enabled": True}, "listeners": {"a": {"p50_us": 382}}, "run_id": "x",
               "phases": [{"phase": "hot", "ops": 5}]}
    assert numeric_leaves(summary, "agents.o") == {"agents.o.writer.writes": 10.0, "agents.o.listeners.a.p50_us": 382.0,
                                                   "agents.o.phases.0.ops": 5.0}  # fmt: skip


def test_the_end_of_run_table_shows_each_client_and_each_slo() -> None:
    summary = {
        "run": {"scenario": "demo", "status": "slo-violated", "error": None},
        "clients": {"q": {"strategy": "quorum", "ok": 10, "fail": 1, "unknown": 0, "lost": 2,
                          "unavailability_s": 1.5, "failover_s": None, "latency_us": {"p99": 900}}},  # fmt: skip
        "slo": [{"figure": "clients.*.lost", "op": "==", "threshold": 0, "value": 2, "ok": False}],
    }
    lines = summary_table(summary).splitlines()
    assert lines[0] == "demo: slo-violated"
    assert lines[2].split() == ["q", "quorum", "10", "1", "0", "2", "1.50", "-", "900"]
    assert lines[3] == "  SLO clients.*.lost == 0: 2 VIOLATED"


def test_an_agents_scenario_config_is_laid_over_the_deployed_one() -> None:
    from kvtestbed.scenarios.agents import merged
    from kvtestbed.scenarios.runner import with_run_id

    deployed = {"run_id": "lab", "generator": {"count": 60000, "rate": 50}, "target": {"password": "p"}}
    changes = with_run_id({"run_id": "{run_id}", "generator": {"count": 3500}}, "20261201-1-x")
    assert merged(deployed, changes) == {
        "run_id": "20261201-1-x",
        "generator": {"count": 3500, "rate": 50},  # only what the scenario names changes
        "target": {"password": "p"},
    }
    assert with_run_id(["a-{run_id}", 3, {"k": "{run_id}"}], "r") == ["a-r", 3, {"k": "r"}]


def test_a_list_entry_is_changed_by_its_index_and_the_others_kept() -> None:
    import pytest

    from kvtestbed.scenarios.agents import AgentError, merged

    deployed = {"listeners": [{"name": "sync", "endpoint": {"password": "p"}},
                              {"name": "async", "endpoint": {"password": "p"}}]}  # fmt: skip
    assert merged(deployed, {"listeners": {"1": {"copies": 4}}}) == {
        "listeners": [{"name": "sync", "endpoint": {"password": "p"}},
                      {"name": "async", "endpoint": {"password": "p"}, "copies": 4}]}  # fmt: skip
    # a whole list given replaces the deployed one, as before
    assert merged(deployed, {"listeners": []}) == {"listeners": []}
    with pytest.raises(AgentError, match=r"^config: list entry 2 does not exist \(the deployed list has 2\)$"):
        merged(deployed, {"listeners": {"2": {"copies": 4}}})


def test_observer_listener_copies_expand_under_their_own_names() -> None:
    from kvagent.service.config import RedisEndpoint
    from kvagent.workloads.observer.agent import ListenerConfig, ObserverConfig, WriterConfig

    endpoint = RedisEndpoint(host="127.0.0.1", port=6379)
    config = ObserverConfig(writer=WriterConfig(endpoint=endpoint),
                            listeners=[ListenerConfig("s", endpoint, "sync"), ListenerConfig("a", endpoint, copies=3)])
    assert [(lc.name, lc.mode) for lc in config.listeners or []] == [("s", "sync"), ("a", "async"), ("a-2", "async"),
                                                                     ("a-3", "async")]  # fmt: skip
