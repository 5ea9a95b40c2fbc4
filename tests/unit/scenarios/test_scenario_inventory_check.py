"""Stage 2, a scenario against an inventory: groups exist, engines and topologies match, fault targets exist in
their group and make sense for it. One line naming the file and field, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvtestbed.scenarios import ScenarioError, check_against, load_scenario

ROOT = Path(__file__).resolve().parents[3]


def scenario_with(valid, write_scenario, *assignments: str):
    (scenario,) = load_scenario(write_scenario(valid), list(assignments))
    return scenario


def test_a_fitting_scenario_passes(valid, write_scenario, lab_inventory):
    check_against(scenario_with(valid, write_scenario), *lab_inventory,
                  user_classes={"KvSetUser": "SETs only.", "KvGetUser": "GETs only."})


CASES = [
    ("group missing", ["needs.groups=[redis, valkey2]"],
     "needs.groups[1]: group 'valkey2' is not in the inventory (groups: agents, keydb, lab, loadgen, loadgen_workers, "
     "monitoring, nats, pcs, pis, redis, redis_cluster, sentinel, valkey)"),
    ("stream leader outside nats", ["faults.0.target=leader:KVT_PIPELINE"],
     "faults[0].target: 'leader:KVT_PIPELINE': a stream leader is only in a nats group, not 'redis'"),
    ("engine mismatch", ["needs.engines={redis: valkey}"],
     "needs.engines.redis: group 'redis' runs redis, not valkey: deploy valkey there or pick another group"),
    ("engine of a group without a store", ["needs.engines={sentinel: redis}"],
     "needs.engines.sentinel: group 'sentinel' runs no key-value store or NATS (no sentinel_kvstore var)"),
    ("nats engine on a kv group", ["needs.engines={valkey: nats}"],
     "needs.engines.valkey: group 'valkey' runs valkey, not nats: deploy nats there or pick another group"),
    ("topology mismatch", ["needs.topologies={redis_cluster: replication}"],
     "needs.topologies.redis_cluster: group 'redis_cluster' is deployed as cluster, not replication"),
    ("writer on nats", ["writers.0.group=nats"],
     "writers[0].group: group 'nats' runs nats; writers need redis, valkey or keydb (or strategy jetstream for "
     "NATS)"),
    ("writer on a cluster", ["writers.0.group=redis_cluster"],
     "writers[0].strategy: group 'redis_cluster' is a Cluster: use cluster"),
    ("cluster writer on a replication set", ["writers.0.strategy=cluster"],
     "writers[0].strategy: group 'redis' is not a Cluster: use redis-py or quorum"),
    ("jetstream writer on redis", ["writers.0.strategy=jetstream"],
     "writers[0].strategy: jetstream publishes to NATS, and group 'redis' runs redis: pick a nats group"),
    ("quorum without sentinels", ["writers.1.group=valkey"],
     "writers[1].strategy: quorum asks the Sentinels, and no sentinel_monitors entry watches group 'valkey': "
     "use redis-py"),
    ("host not in the fault's group", ["faults.1.target=pc-1"],
     "faults[1].target: host 'pc-1' is not in group 'redis' (pi-1, pi-2, pi-3)"),
    ("host not in the inventory", ["faults.1.target=pi-9"],
     "faults[1].target: host 'pi-9' is not in group 'redis' (pi-1, pi-2, pi-3)"),
    ("primary of a cluster", ["faults.1.group=redis_cluster"],
     "faults[1].target: group 'redis_cluster' has no primary (cluster): use one, minority, majority, all or a host "
     "name"),
    ("primary of a mesh", ["faults.1.group=keydb"],
     "faults[1].target: group 'keydb' has no primary (mesh): use one, minority, majority, all or a host name"),
    ("minority of two", ["faults.1.group=valkey", "faults.1.target=minority"],
     "faults[1].target: group 'valkey' has 2 hosts: a minority needs 3 or more"),
    ("fault group missing", ["faults.0.group=redis2"],
     "faults[0].group: group 'redis2' is not in the inventory (groups: agents, keydb, lab, loadgen, loadgen_workers, "
     "monitoring, nats, pcs, pis, redis, redis_cluster, sentinel, valkey)"),
    ("nats service on a kv group", ["faults.1.service=nats"], "faults[1].service: group 'redis' is not a NATS group"),
    ("kv service on nats", ["faults.1.group=nats", "faults.1.service=kv"],
     "faults[1].service: group 'nats' has no key-value store (no nats_kvstore var)"),
    ("no default service", ["faults.1.group=sentinel", "faults.1.target=one"],
     "faults[1].service: group 'sentinel' has no default service (no key-value store or NATS): name one (sentinel, "
     "agent:<name>, <unit>.service)"),
    ("agent host", ["agents.0.host=pi-2"],
     "agents[0].host: host 'pi-2' is not in the inventory's agents group (pc-1, pc-2, pi-1)"),
    ("load target group", ["load.target=valkey9"],
     "load.target: group 'valkey9' is not in the inventory (groups: agents, keydb, lab, loadgen, loadgen_workers, "
     "monitoring, nats, pcs, pis, redis, redis_cluster, sentinel, valkey)"),
    ("replicas of a group that is not there", ["replicas={redis9: 1}"],
     "replicas.redis9: group 'redis9' is not in the inventory (groups: agents, keydb, lab, loadgen, loadgen_workers, "
     "monitoring, nats, pcs, pis, redis, redis_cluster, sentinel, valkey)"),
    ("replicas of a cluster", ["replicas={redis_cluster: 1}"],
     "replicas.redis_cluster: group 'redis_cluster' is not a replication set (a key-value group with a primary: "
     "topology replication or watched by Sentinel)"),
    ("replicas of nats", ["replicas={nats: 1}"],
     "replicas.nats: group 'nats' is not a replication set (a key-value group with a primary: topology replication "
     "or watched by Sentinel)"),
    ("more replicas than the group has", ["replicas={redis: 3}"],
     "replicas.redis: 3 replicas: group 'redis' has 2 besides its primary (pi-1, pi-2, pi-3)"),
    ("load user class", ["load.users=[KvSetUser, KvSpamUser]"],
     "load.users[1]: unknown user class 'KvSpamUser' (KvSetUser, KvGetUser)"),
]


@pytest.mark.parametrize(("assignments", "expected"), [(a, e) for _, a, e in CASES], ids=[c[0] for c in CASES])
def test_one_line_names_file_and_field(valid, write_scenario, lab_inventory, assignments, expected):
    scenario = scenario_with(valid, write_scenario, *assignments)
    with pytest.raises(ScenarioError) as caught:
        check_against(scenario, *lab_inventory, user_classes={"KvSetUser": "", "KvGetUser": ""})
    assert str(caught.value) == f"{scenario.source}: {expected}"


def test_an_empty_group_is_named(valid, write_scenario, lab_inventory):
    groups, group_vars = lab_inventory
    groups["sentinel"] = []
    scenario = scenario_with(valid, write_scenario)
    with pytest.raises(ScenarioError) as caught:
        check_against(scenario, groups, group_vars)
    assert str(caught.value) == f"{scenario.source}: needs.groups[1]: group 'sentinel' has no hosts in the inventory"


@pytest.mark.parametrize("assignments", [
    ["faults.1.group=valkey"],  # replication without Sentinel: ROLE says who is primary
    ["faults.1.group=nats"],  # the JetStream meta leader
    ["faults.1.group=nats", "faults.1.target=minority"],
    ["faults.1.group=redis_cluster", "faults.1.target=pi-2"],
    ["faults.1.group=sentinel", "faults.1.target=one", "faults.1.service=sentinel"],
    ["faults.0.params={shape: halves}", "faults.0.target=majority"],
    ["load.target=redis://198.18.0.11:6379"],
    ["faults.1.group=nats", "faults.1.target=leader:KVT_PIPELINE"],
    ["replicas={redis: 0}"],
    ["replicas={valkey: 1}"],  # replication without Sentinel
], ids=["valkey primary", "nats leader", "nats minority", "cluster host", "sentinel service", "halves",
        "load URL", "stream leader", "replicas none", "replicas valkey"])
def test_targets_that_fit(valid, write_scenario, lab_inventory, assignments):
    check_against(scenario_with(valid, write_scenario, *assignments), *lab_inventory)


def test_the_real_lab_inventory_has_the_shape_the_unit_tests_assume(real_lab_inventory, lab_inventory):
    groups, group_vars = real_lab_inventory
    hand_groups, hand_vars = lab_inventory
    for group, hosts in hand_groups.items():
        assert sorted(groups[group]) == sorted(hosts), group
    for group, variables in hand_vars.items():
        for key, value in variables.items():
            real = group_vars[group][key]
            assert real == value if not isinstance(value, dict) else {k: real[k] for k in value} == value, key


def test_shipped_scenarios_fit_the_real_lab_inventory(real_lab_inventory):
    for path in sorted((ROOT / "scenarios").glob("*.yml")):
        for scenario in load_scenario(path):
            check_against(scenario, *real_lab_inventory)


def test_the_real_lab_inventory_rejects_a_host_it_lacks(real_lab_inventory):
    (scenario,) = load_scenario(ROOT / "scenarios/demo.yml", ["faults.0.target=pi-9"])
    with pytest.raises(ScenarioError) as caught:
        check_against(scenario, *real_lab_inventory)
    assert str(caught.value).endswith("demo.yml: faults[0].target: host 'pi-9' is not in group 'redis' "
                                      "(pi-1, pi-2, pi-3)")
