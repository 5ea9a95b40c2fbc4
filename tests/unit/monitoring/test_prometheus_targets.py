"""The prometheus role's filter plugin: every scrape target from the inventory's groups and host vars, bad input
as one line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.support.plugins import load_plugin

ROOT = Path(__file__).resolve().parents[3]
PLUGIN = ROOT / "roles" / "prometheus" / "filter_plugins" / "prometheus_targets.py"


plugin = load_plugin(str(PLUGIN.relative_to(ROOT)), "prometheus_targets_plugin")

SETTINGS = {
    "servers_group": "monitoring",
    "port": 9090,
    "node_group": "all",
    "node_port": 9100,
    "kv_groups": ["redis", "valkey", "redis_cluster", "keydb"],
    "sentinel_group": "sentinel",
    "agents_group": "agents",
    "port_offset": 30000,
    "nats_group": "nats",
    "nats_port": 7777,
    "locust_group": "loadgen",
    "locust_port": 8089,
}


def inventory() -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """A small lab: a Redis set with Sentinels and a Cluster on two Pis, Valkey and the agents on a PC, NATS on a PC
    and a Pi, the Locust master on the PC (a Pi of the loadgen group runs workers only)."""
    hostvars: dict[str, dict[str, Any]] = {
        "pi-1": {"ansible_host": "198.18.0.11"},
        "pi-2": {"ansible_host": "198.18.0.12"},
        "pc-1": {"ansible_host": "198.18.0.21"},
    }
    for host in ("pi-1", "pi-2"):
        hostvars[host]["redis_kvstore"] = {"engine": "redis", "topology": "replication", "ports": [6379]}
        hostvars[host]["redis_cluster_kvstore"] = {"engine": "redis", "topology": "cluster", "ports": [7000, 7001]}
        hostvars[host]["keydb_kvstore"] = {"engine": "keydb", "ports": [6381]}
        hostvars[host]["keydb_deploy"] = False
    hostvars["pc-1"]["valkey_kvstore"] = {"engine": "valkey", "ports": [6380]}
    hostvars["pc-1"]["agents_instances"] = [
        {"name": "observer-1", "kind": "observer", "config": {"service": {"metrics_port": 9410}}},
        {"name": "hotkeys", "kind": "hotkeys", "config": {"service": {"metrics_port": 9430}}},
    ]
    hostvars["pc-1"]["locust_role"] = "master"
    hostvars["pi-1"]["locust_role"] = "worker"
    groups = {
        "all": ["pi-1", "pi-2", "pc-1"],
        "ungrouped": [],
        "redis": ["pi-1", "pi-2"],
        "sentinel": ["pi-1", "pi-2"],
        "redis_cluster": ["pi-1", "pi-2"],
        "keydb": ["pi-1", "pi-2"],
        "valkey": ["pc-1"],
        "agents": ["pc-1"],
        "monitoring": ["pc-1"],
        "nats": ["pc-1", "pi-2"],
        "loadgen": ["pc-1", "pi-1"],
    }
    return hostvars, groups


def targets(result: dict[str, Any], job: str) -> list[str]:
    return [t for group in result["jobs"][job] for t in group["targets"]]


def one_problem(hostvars: dict[str, Any], groups: dict[str, list[str]], **settings: Any) -> str:
    result = plugin.prometheus_targets(hostvars, groups, {**SETTINGS, **settings})
    assert len(result["problems"]) == 1, result["problems"]
    problem = result["problems"][0]
    assert "\n" not in problem
    return str(problem)


def test_every_job_from_the_inventory() -> None:
    result = plugin.prometheus_targets(*inventory(), SETTINGS)
    assert result["problems"] == []
    assert list(result["jobs"]) == ["prometheus", "node", "redis", "sentinel", "agents", "runner", "nats", "locust"]
    assert targets(result, "prometheus") == ["198.18.0.21:9090"]
    assert targets(result, "node") == ["198.18.0.11:9100", "198.18.0.12:9100", "198.18.0.21:9100"]
    # one exporter per instance at its port + 30000; KeyDB is turned off (keydb_deploy: false): no targets
    assert targets(result, "redis") == [
        "198.18.0.11:36379",
        "198.18.0.12:36379",
        "198.18.0.21:36380",
        "198.18.0.11:37000",
        "198.18.0.11:37001",
        "198.18.0.12:37000",
        "198.18.0.12:37001",
    ]
    assert targets(result, "sentinel") == ["198.18.0.11:56379", "198.18.0.12:56379"]
    assert targets(result, "agents") == ["198.18.0.21:9410", "198.18.0.21:9430"]
    # the NATS collector beside each server; the Locust master's web UI (pi-1 runs workers only)
    assert targets(result, "nats") == ["198.18.0.21:7777", "198.18.0.12:7777"]
    assert targets(result, "locust") == ["198.18.0.21:8089"]
    assert result["auth"] == {"locust": {"username": "admin"}}


def test_labels_name_the_instance_and_are_strings() -> None:
    result = plugin.prometheus_targets(*inventory(), SETTINGS)
    cluster = [g for g in result["jobs"]["redis"] if g["targets"] == ["198.18.0.12:37001"]]
    assert cluster == [
        {
            "targets": ["198.18.0.12:37001"],
            "labels": {"host": "pi-2", "deployment": "redis_cluster", "engine": "redis", "instance_port": "7001"},
        }
    ]
    assert result["jobs"]["sentinel"][0]["labels"] == {
        "host": "pi-1",
        "deployment": "sentinel",
        "engine": "redis",
        "instance_port": "26379",
    }
    assert result["jobs"]["agents"][0]["labels"] == {"host": "pc-1", "agent": "observer-1", "kind": "observer"}
    assert result["jobs"]["nats"][1] == {"targets": ["198.18.0.12:7777"], "labels": {"host": "pi-2"}}
    assert result["jobs"]["locust"] == [{"targets": ["198.18.0.21:8089"], "labels": {"host": "pc-1"}}]
    for job in result["jobs"].values():
        for group in job:
            assert all(isinstance(v, str) for v in group["labels"].values()), group


def test_a_host_removed_from_the_inventory_loses_every_target() -> None:
    hostvars, groups = inventory()
    del hostvars["pi-2"]
    groups = {name: [h for h in hosts if h != "pi-2"] for name, hosts in groups.items()}
    result = plugin.prometheus_targets(hostvars, groups, SETTINGS)
    assert result["problems"] == []
    every = [t for job in result["jobs"] for t in targets(result, job)]
    assert every and not [t for t in every if t.startswith("198.18.0.12:")]


def test_a_deployment_turned_on_gets_its_targets() -> None:
    hostvars, groups = inventory()
    for host in ("pi-1", "pi-2"):
        hostvars[host]["keydb_deploy"] = "True"  # as a template renders it
    result = plugin.prometheus_targets(hostvars, groups, SETTINGS)
    keydb = [g["targets"][0] for g in result["jobs"]["redis"] if g["labels"]["deployment"] == "keydb"]
    assert keydb == ["198.18.0.11:36381", "198.18.0.12:36381"]


def test_exporter_host_vars_win_over_the_settings() -> None:
    hostvars, groups = inventory()
    hostvars["pi-1"]["exporters_node_port"] = 9200
    hostvars["pi-1"]["exporters_redis_port_offset"] = 20000
    hostvars["pi-1"]["sentinel_port"] = 26380
    result = plugin.prometheus_targets(hostvars, groups, SETTINGS)
    assert "198.18.0.11:9200" in targets(result, "node")
    assert "198.18.0.11:26379" in targets(result, "redis")
    assert "198.18.0.11:46380" in targets(result, "sentinel")


def test_kvstore_ports_default_like_the_kvstore_role() -> None:
    hostvars, groups = inventory()
    del hostvars["pc-1"]["valkey_kvstore"]
    result = plugin.prometheus_targets(hostvars, groups, SETTINGS)
    valkey = [g for g in result["jobs"]["redis"] if g["labels"]["deployment"] == "valkey"]
    assert [(g["targets"], g["labels"]["engine"]) for g in valkey] == [(["198.18.0.21:36379"], "redis")]


def test_absent_groups_and_empty_group_names_give_no_targets() -> None:
    hostvars, groups = inventory()
    result = plugin.prometheus_targets(
        hostvars,
        groups,
        {**SETTINGS, "kv_groups": ["redis", "no_such_group"], "sentinel_group": "", "agents_group": ""},
    )
    assert result["problems"] == []
    assert targets(result, "sentinel") == [] and targets(result, "agents") == []
    assert len(targets(result, "redis")) == 2


def test_the_input_is_not_modified() -> None:
    hostvars, groups = inventory()
    before = copy.deepcopy((hostvars, groups))
    plugin.prometheus_targets(hostvars, groups, SETTINGS)
    assert (hostvars, groups) == before


def test_two_targets_on_one_address_and_port_name_both() -> None:
    hostvars, groups = inventory()
    hostvars["pc-1"]["agents_instances"][1]["config"]["service"]["metrics_port"] = 9100
    assert one_problem(hostvars, groups) == (
        "target 198.18.0.21:9100 is claimed twice: node (host pc-1) and agent hotkeys (host pc-1); "
        "give one of them another port"
    )


def test_an_instance_port_that_lands_on_a_sentinel_exporter_is_caught() -> None:
    hostvars, groups = inventory()
    hostvars["pi-2"]["redis_kvstore"]["ports"] = [6379, 26379]
    assert one_problem(hostvars, groups) == (
        "target 198.18.0.12:56379 is claimed twice: redis exporter of redis port 26379 (host pi-2) and "
        "redis exporter of Sentinel sentinel port 26379 (host pi-2); give one of them another port"
    )


def test_two_hosts_with_one_address_are_caught() -> None:
    hostvars, groups = inventory()
    hostvars["pi-2"]["ansible_host"] = "198.18.0.11"
    problems = plugin.prometheus_targets(hostvars, groups, SETTINGS)["problems"]
    assert problems[0] == (
        "target 198.18.0.11:9100 is claimed twice: node (host pi-1) and node (host pi-2); give one of them another port"
    )


def test_no_prometheus_host() -> None:
    hostvars, groups = inventory()
    groups["monitoring"] = []
    assert one_problem(hostvars, groups) == (
        "inventory group 'monitoring' has no hosts: add the host that runs Prometheus"
    )
    del groups["monitoring"]
    assert one_problem(hostvars, groups).startswith("inventory group 'monitoring' has no hosts")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda hv: hv["pi-1"]["redis_kvstore"].update(ports=6379),
            "host pi-1: redis_kvstore.ports must be a list of ports",
        ),
        (
            lambda hv: hv["pi-1"]["redis_kvstore"].update(ports=["six"]),
            "host pi-1: redis_kvstore.ports: 'six' is not a port number",
        ),
        (
            lambda hv: hv["pi-1"]["redis_kvstore"].update(ports=[40000]),
            "host pi-1: redis_kvstore.ports: 40000 + exporter port offset 30000 = 70000 is beyond 65535",
        ),
        (
            lambda hv: hv["pi-1"].update(redis_kvstore="6379"),
            "host pi-1: redis_kvstore must be a mapping (ports, engine, topology)",
        ),
        (lambda hv: hv["pi-2"].update(sentinel_port=0), "host pi-2: sentinel_port: 0 is not a port number (1-65535)"),
        (
            lambda hv: hv["pi-2"].update(exporters_redis_port_offset="lots"),
            "host pi-2: exporters_redis_port_offset 'lots' is not a number",
        ),
        (lambda hv: hv["pc-1"].update(exporters_node_port=True), "host pc-1: exporters_node_port: True is not a port"),
        (lambda hv: hv["pc-1"].update(agents_instances={"name": "x"}), "host pc-1: agents_instances must be a list"),
        (
            lambda hv: hv["pi-2"].update(exporters_nats_port="http"),
            "host pi-2: exporters_nats_port: 'http' is not a port number",
        ),
        (
            lambda hv: hv["pc-1"].update(locust_web_port=70000),
            "host pc-1: locust_web_port: 70000 is not a port number (1-65535)",
        ),
        (
            lambda hv: hv["pc-1"]["agents_instances"].append({"kind": "observer"}),
            "host pc-1: agents_instances[2] has no name",
        ),
        (
            lambda hv: hv["pc-1"]["agents_instances"][0]["config"]["service"].update(metrics_port="x"),
            "host pc-1: agents_instances[observer-1].config.service.metrics_port: 'x' is not a port number",
        ),
    ],
)
def test_bad_input_is_one_line_naming_host_and_variable(change: Any, expected: str) -> None:
    hostvars, groups = inventory()
    change(hostvars)
    assert one_problem(hostvars, groups).startswith(expected)


def test_an_unknown_node_group() -> None:
    assert one_problem(*inventory(), node_group="nodes") == "prometheus_node_group: 'nodes' is not an inventory group"


def test_agent_defaults_follow_the_agents_role() -> None:
    """No metrics_port: the agents' ServiceConfig default (9400); agents_metrics_host or the config's own host."""
    hostvars, groups = inventory()
    hostvars["pc-1"]["agents_instances"] = [
        {"name": "a", "kind": "streams", "config": {}},
        {"name": "b", "kind": "streams", "config": {"service": {"metrics_port": 9401, "metrics_host": "10.0.0.5"}}},
    ]
    result = plugin.prometheus_targets(hostvars, groups, SETTINGS)
    assert targets(result, "agents") == ["198.18.0.21:9400", "10.0.0.5:9401"]
    hostvars["pc-1"]["agents_metrics_host"] = "198.18.1.21"
    result = plugin.prometheus_targets(hostvars, groups, SETTINGS)
    assert targets(result, "agents") == ["198.18.1.21:9400", "10.0.0.5:9401"]


def test_filter_is_registered() -> None:
    assert plugin.FilterModule().filters() == {"prometheus_targets": plugin.prometheus_targets}


def test_the_runner_target_is_the_controller_as_given() -> None:
    hostvars = {"m1": {"ansible_host": "198.18.0.21"}}
    groups = {"all": ["m1"], "monitoring": ["m1"]}
    ok = plugin.prometheus_targets(hostvars, groups, {"servers_group": "monitoring", "node_group": "all",
                                               "runner_targets": ["198.18.0.1:9470"]})  # fmt: skip
    assert ok["problems"] == []
    assert ok["jobs"]["runner"] == [{"targets": ["198.18.0.1:9470"], "labels": {"host": "controller"}}]
    bad = plugin.prometheus_targets(hostvars, groups, {"servers_group": "monitoring", "node_group": "all",
                                                "runner_targets": ["controller", "198.18.0.1:99999"]})  # fmt: skip
    assert bad["problems"] == [
        "prometheus_runner_targets: 'controller' is not address:port",
        "prometheus_runner_targets '198.18.0.1:99999': 99999 is not a port number (1-65535)",
    ]


def test_nats_and_locust_follow_their_roles_host_vars() -> None:
    """exporters_nats_port moves the collector's target; locust_web_host and locust_web_port the master's; a
    loadgen host without locust_role counts as a master (the group is the masters'), a worker-only one does not."""
    hostvars, groups = inventory()
    hostvars["pi-2"]["exporters_nats_port"] = 7778
    hostvars["pc-1"].update(locust_web_host="198.18.1.21", locust_web_port=8090, locust_web_user="ops")
    groups["loadgen"].append("pi-2")
    hostvars["pi-2"]["locust_web_user"] = "ops"
    result = plugin.prometheus_targets(hostvars, groups, SETTINGS)
    assert result["problems"] == []
    assert targets(result, "nats") == ["198.18.0.21:7777", "198.18.0.12:7778"]
    assert targets(result, "locust") == ["198.18.1.21:8090", "198.18.0.12:8089"]
    assert result["auth"] == {"locust": {"username": "ops"}}


def test_locust_masters_with_two_users_are_one_line() -> None:
    hostvars, groups = inventory()
    hostvars["pi-2"]["locust_role"] = "master"
    hostvars["pi-2"]["locust_web_user"] = "ops"
    groups["loadgen"].append("pi-2")
    assert one_problem(hostvars, groups) == (
        "locust_web_user differs between the Locust masters (pc-1: admin, pi-2: ops); give them one user"
    )


def test_no_nats_or_locust_group_gives_no_targets_and_no_login() -> None:
    result = plugin.prometheus_targets(*inventory(), {**SETTINGS, "nats_group": "", "locust_group": "nobody"})
    assert result["problems"] == []
    assert result["jobs"]["nats"] == [] and result["jobs"]["locust"] == [] and result["auth"] == {}


def test_a_nats_collector_on_a_taken_port_is_caught() -> None:
    hostvars, groups = inventory()
    hostvars["pi-2"]["exporters_nats_port"] = 9100
    assert one_problem(hostvars, groups) == (
        "target 198.18.0.12:9100 is claimed twice: node (host pi-2) and NATS collector (host pi-2); "
        "give one of them another port"
    )
